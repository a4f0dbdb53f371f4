"""Progress that a person can follow: hashing (MB) and merging (keys, MB, ETA), in the CLI bar and
the web UI's status line."""

from __future__ import annotations

import io
import os
import re
import shutil
import sys
from argparse import Namespace

from lib_merge.engine.options import EngineOptions
from lib_merge.engine.progress import ProgressEvent
from lib_merge.engine.to_file import SaveOptions, merge_to_file
from lib_merge.recipe import parse_recipe


def _recipe(a, b):
    return parse_recipe(f'alloy-recipe 1\nA = model("{a}")\nB = model("{b}")\nm = weighted_sum(A, B, alpha=0.3)\n')


def test_a_file_merge_reports_hashing_and_merging(sd1, tmp_path, monkeypatch):
    monkeypatch.setenv("ALLOY_HOME", str(tmp_path / "cold"))  # no cached hashes: the inputs are read in full
    events: list[ProgressEvent] = []
    out = tmp_path / "o.safetensors"
    merge_to_file(_recipe(*sd1[:2]), SaveOptions(str(out)), EngineOptions(progress=events.append))
    hashing = [e for e in events if e.phase == "hashing"]
    for path in sd1[:2]:
        mine = [e for e in hashing if e.item == path.name]
        assert mine and mine[-1].done == mine[-1].total == os.path.getsize(path) and mine[-1].unit == "bytes"
    merging = [e for e in events if e.phase == "merging"]
    assert [e.done for e in merging] == list(range(1, len(merging) + 1)) and merging[-1].done == merging[-1].total
    assert merging[-1].bytes_done == merging[-1].bytes_total > 0
    header = int.from_bytes(out.read_bytes()[:8], "little")
    assert merging[-1].bytes_total == os.path.getsize(out) - 8 - header  # the tensor bytes of the file


class _Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_the_cli_bar_has_no_stray_first_line_and_shows_hashing(monkeypatch):
    from lib_merge.surfaces.cli import merge as cli

    terminal = _Terminal()
    monkeypatch.setattr(sys, "stderr", terminal)
    update = cli._progress(Namespace(no_progress=False, quiet=False))
    assert terminal.getvalue() == ""  # nothing until there is something to show
    update(ProgressEvent("hashing", 8 * 2**20, 16 * 2**20, "bytes", item="a.safetensors"))
    assert "hashing a.safetensors" in terminal.getvalue() and "0key" not in terminal.getvalue()
    for done in (1, 2):
        update(ProgressEvent("merging", done, 2, "keys", done * 2**20, 2 * 2**20))
    assert "merging" in terminal.getvalue() and "0key" not in terminal.getvalue()


def test_the_status_line_shows_phase_counts_and_eta(monkeypatch):
    from lib_merge.app import workbench as session

    now = [100.0]
    monkeypatch.setattr(session.time, "monotonic", lambda: now[0])
    progress = session.Progress("saving x.safetensors")
    progress.update(ProgressEvent("merging", 1, 1000, "keys", 2 * 2**20, 2000 * 2**20))
    assert progress.text() == "saving x.safetensors: merging 1/1,000 keys, 2/2,000 MB"  # too early for an ETA
    now[0] = 104.0
    progress.update(ProgressEvent("merging", 100, 1000, "keys", 200 * 2**20, 2000 * 2**20))
    assert progress.text() == "saving x.safetensors: merging 100/1,000 keys, 200/2,000 MB, ETA 36 s"
    progress.update(ProgressEvent("hashing", 512 * 2**20, 2048 * 2**20, "bytes", item="b.safetensors"))
    assert "hashing b.safetensors 512/2,048 MB" in progress.text() and "merging 100/1,000" in progress.text()
    assert session.Progress().text() == "idle"


def test_the_web_merge_shows_hashing_and_merging(sd1, tmp_path, monkeypatch):
    from lib_merge.app import workbench as session
    from lib_merge.app.workbench import MergeRequest, Workbench
    from lib_merge.host.folder import FolderHost
    from lib_merge.recipe.form import MergeSettings

    monkeypatch.setenv("ALLOY_HOME", str(tmp_path / "cold"))
    for p in sd1[:2]:
        shutil.copy(p, tmp_path / p.name)
    seen: list[str] = []
    update = session.Progress.update

    def recording(self, event):
        update(self, event)
        seen.append(self.text())

    monkeypatch.setattr(session.Progress, "update", recording)
    bench = Workbench(FolderHost(str(tmp_path)))
    bench.merge(MergeRequest(MergeSettings(sd1[0].name, sd1[1].name, "ws", alpha=0.4)))
    assert any(re.fullmatch(r"reading the inputs: hashing sd1_a\.safetensors \d+/\d+ MB.*", s) for s in seen), seen
    merging = r"saving .*\.safetensors: merging [\d,]+/[\d,]+ tensors, \d+/\d+ MB, reading from disk.*"
    assert any(re.fullmatch(merging, s) for s in seen)
    assert bench.progress.text() == "idle"
