"""Where Alloy keeps shipped data and the user's own files."""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

from lib_merge.errors import ParameterError

PROJECT_ROOT = Path(__file__).resolve().parent.parent
SHIPPED_PRESETS = PROJECT_ROOT / "presets" / "mbw_presets.tsv"


def user_data_dir() -> Path:
    """`$ALLOY_HOME`, else ~/.local/share/alloy (the WebUI host points ALLOY_HOME at its own folder)."""
    home = os.environ.get("ALLOY_HOME")
    return Path(home) if home else Path.home() / ".local" / "share" / "alloy"


def file_in_folders(text: str, folders: Sequence[Path], file_name: str) -> Path:
    """`text` (a path, or a name inside one of `folders`) as an existing file called `file_name`
    inside one of `folders`. Anything else gets one error, the same whether a file exists there or
    not, so a server that reads files its users name tells nothing about the rest of its disk."""
    roots = [os.path.realpath(f) for f in folders]
    refusal = ParameterError(f"only a file named {file_name} can be read here, from: " + ", ".join(roots or ["-"]))
    name = str(text or "").strip()
    if not name or "\x00" in name:
        raise refusal
    candidates = [name] if os.path.isabs(name) else [os.path.join(root, name) for root in roots]
    for candidate in candidates:
        real = os.path.realpath(candidate)
        inside = any(real.startswith(root + os.sep) for root in roots)
        if inside and os.path.basename(real) == file_name and os.path.isfile(real):
            return Path(real)
    raise refusal
