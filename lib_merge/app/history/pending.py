"""Rows promised before a file is published, so that a kill between publish and log loses no row.

Just before a merge gives its file its real name, the row it will log is written to
`<history>.pending/<pid>-<hex>.json` with the identity (device, inode) of the finished temporary
file, which the published file keeps. The row is logged and the note removed right after. When a
process died in between, the next append finds its note: if the file under that name is still the
one it wrote, the row is logged, marked as recovered; otherwise the note is dropped.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import secrets
from dataclasses import asdict
from pathlib import Path

from lib_merge.app.history.rows import RowDraft
from lib_merge.io.tempfiles import pid_alive, write_text

RECOVERED = "the merge process ended after saving, before it logged this row"
_NOTE_NAME = re.compile(r"^(\d+)-[0-9a-f]+\.json$")


def pending_folder(history: Path) -> Path:
    return history.with_name(history.name + ".pending")


def announce(history: Path, draft: RowDraft, file_identity: tuple[int, int]) -> Path:
    """Write the note of a row about to be logged for the file with this (device, inode)."""
    folder = pending_folder(history)
    folder.mkdir(parents=True, exist_ok=True)
    note = folder / f"{os.getpid()}-{secrets.token_hex(4)}.json"
    write_text(str(note), json.dumps({"row": asdict(draft), "file": list(file_identity)}))
    return note


def settle(note: Path | None) -> None:
    if note is not None:
        with contextlib.suppress(OSError):
            note.unlink()


def orphaned_rows(history: Path) -> list[tuple[Path, RowDraft | None]]:
    """Notes of dead processes: the row to log (None when its file is gone or replaced), by note."""
    folder = pending_folder(history)
    try:
        names = sorted(os.listdir(folder))
    except OSError:
        return []
    found = []
    for name in names:
        match = _NOTE_NAME.match(name)
        if match is None or pid_alive(int(match.group(1))):
            continue
        note = folder / name
        found.append((note, _recoverable(note)))
    return found


def _recoverable(note: Path) -> RowDraft | None:
    try:
        data = json.loads(note.read_text(encoding="utf-8"))
        draft = RowDraft(**data["row"])
        device, inode = data["file"]
        st = os.stat(draft.output)
    except (OSError, ValueError, TypeError, KeyError):
        return None
    if (st.st_dev, st.st_ino) != (device, inode):
        return None  # replaced since (that merge logged its own row) or never published
    draft.settings = {**draft.settings, "recovered": RECOVERED}
    return draft
