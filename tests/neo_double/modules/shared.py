"""The A1111 double's shared module with Neo's command line: `--ckpt-dirs` (a list), no `--ckpt-dir`."""

import types
from pathlib import Path

_source = Path(__file__).resolve().parents[2] / "webui_double" / "modules" / "shared.py"
exec(compile(_source.read_text(), str(_source), "exec"))  # noqa: S102 - the same module, with Neo's options

cmd_opts = types.SimpleNamespace(ckpt_dirs=[], api_auth=None)  # modules/cmd_args.py: action="append", default=[]
opts.data["forge_preset"] = "sd"  # noqa: F821 - defined by the exec above; Neo: OptionInfo("sd")
