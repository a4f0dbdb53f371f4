"""Where Alloy keeps shipped data and the user's own files."""

from __future__ import annotations

import os
from pathlib import Path

PROJECT_ROOT = Path(__file__).resolve().parent.parent
SHIPPED_PRESETS = PROJECT_ROOT / "presets" / "mbw_presets.tsv"


def user_data_dir() -> Path:
    """`$ALLOY_HOME`, else ~/.local/share/alloy (the WebUI host points ALLOY_HOME at its own folder)."""
    home = os.environ.get("ALLOY_HOME")
    return Path(home) if home else Path.home() / ".local" / "share" / "alloy"
