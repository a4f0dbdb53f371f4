"""Where Alloy keeps shipped data and the user's own files."""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

from lib_merge.errors import ParameterError

# The preset files: the shipped ones in the presets folder, the user's own under the same names in user data.
MBW_PRESETS = "mbw_presets.tsv"
LORA_PRESETS = "lbw_presets.tsv"
XYZ_PRESETS = "xyz_presets.json"

_PACKAGE = Path(__file__).resolve().parent


def user_data_dir() -> Path:
    """`$ALLOY_HOME`, else ~/.local/share/alloy (the WebUI host points ALLOY_HOME at its own folder)."""
    home = os.environ.get("ALLOY_HOME")
    return Path(home) if home else Path.home() / ".local" / "share" / "alloy"


def shipped_presets_dir() -> Path:
    """The shipped presets: `lib_merge/presets/` in an installed wheel (setup.py maps the top-level folder
    there), else `presets/` beside the package (a source checkout, the WebUI extension's folder)."""
    installed = _PACKAGE / "presets"
    return installed if installed.is_dir() else _PACKAGE.parent / "presets"


def preset_files(file_name: str) -> tuple[Path, Path]:
    """The shipped preset file and the user's own of the same name, which adds to it and wins on a name."""
    return shipped_presets_dir() / file_name, user_data_dir() / file_name


def inside_folder(path: str, folder: str, follow_links: bool = True) -> bool:
    """Whether `path` lies in `folder`; with follow_links, symlinks must not lead out of it either."""
    resolve = os.path.realpath if follow_links else os.path.abspath
    real, base = resolve(path), resolve(folder)
    return real == base or real.startswith(base + os.sep)


def file_in_folders(text: str, folders: Sequence[Path | str], file_name: str | None = None) -> Path:
    """`text` (a path, or a name inside one of `folders`) as an existing file inside one of `folders`,
    called `file_name` when one is given. Anything else gets one error, the same whether a file exists
    there or not, so a server that reads files its users name tells nothing about the rest of its disk."""
    what = f"a file named {file_name}" if file_name else "a file"
    refusal = ParameterError(f"only {what} can be read here, from: " + ", ".join(str(f) for f in folders))
    name = str(text or "").strip()
    if not name or "\x00" in name:
        raise refusal
    for folder in folders:
        path = os.path.realpath(os.path.join(folder, name))  # an absolute `name` stands for itself
        if (
            path != os.path.realpath(folder)
            and inside_folder(path, str(folder))
            and (file_name is None or os.path.basename(path) == file_name)
            and os.path.isfile(path)
        ):
            return Path(path)
    raise refusal
