"""Nothing the user had is lost and nothing is left behind: no-replace publishing, locked temporary
files, `clean`, SIGTERM, kill -9, and the history row of a merge killed between saving and logging."""

from __future__ import annotations

import errno
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from helpers import load
from test_cli import ROOT, cli, error_line

from lib_merge.app.history import RowDraft, read_history
from lib_merge.app.history.pending import pending_folder
from lib_merge.app.history.record import merge_and_log
from lib_merge.engine.to_file import FileSink, SaveOptions, merge_to_file
from lib_merge.errors import OutputExistsError
from lib_merge.io import tempfiles
from lib_merge.io.tempfiles import TEMP_MARK, TempFile, clean_stale, publish, write_text
from lib_merge.io.writer import PlannedTensor, SafetensorsWriter
from lib_merge.recipe import parse_recipe


def _recipe(a, b, alpha=0.5):
    return parse_recipe(f'alloy-recipe 1\nA = model("{a}")\nB = model("{b}")\nm = weighted_sum(A, B, alpha={alpha})\n')


def _dead_pid() -> int:
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()
    return proc.pid


def _temp_names(folder: Path) -> list[str]:
    return [n for n in os.listdir(folder) if TEMP_MARK in n]


def test_a_file_that_appears_during_the_write_is_never_replaced(tmp_path):
    target = tmp_path / "out.safetensors"
    writer = SafetensorsWriter(str(target), [PlannedTensor("x", torch.float32, (2,))], {}).open()
    writer.write("x", torch.ones(2))
    target.write_bytes(b"the user's own file")  # appears while the merge runs
    with pytest.raises(OutputExistsError, match="out.safetensors exists"):
        writer.finish({})
    assert target.read_bytes() == b"the user's own file" and os.listdir(tmp_path) == ["out.safetensors"]


def test_overwrite_means_last_writer_wins(tmp_path):
    target = tmp_path / "out.safetensors"
    writer = SafetensorsWriter(str(target), [PlannedTensor("x", torch.float32, (2,))], {}, overwrite=True).open()
    writer.write("x", torch.ones(2))
    target.write_bytes(b"older")
    writer.finish({})
    assert torch.equal(load(target)["x"], torch.ones(2)) and os.listdir(tmp_path) == ["out.safetensors"]


def test_race_at_the_last_instant_fails_cleanly_and_logs_nothing(sd1, tmp_path, monkeypatch):
    """The target appears between the final check and the rename: exists error, temp gone, no row."""
    from lib_merge.app.history import record

    target = tmp_path / "raced.safetensors"
    history = tmp_path / "history.csv"
    announce = record.announce

    def announce_then_race(*args):  # the row is promised just before the file takes its name
        note = announce(*args)
        target.write_bytes(b"another merge got here first")
        return note

    monkeypatch.setattr(record, "announce", announce_then_race)
    with pytest.raises(OutputExistsError):
        merge_and_log(_recipe(*sd1[:2]), SaveOptions(str(target)), None, None, history, {}, print)
    assert target.read_bytes() == b"another merge got here first"
    assert sorted(os.listdir(tmp_path)) == ["history.csv.pending", "raced.safetensors"]  # no temp file, no history
    assert not os.listdir(pending_folder(history))


def test_filesystems_without_hard_links_use_a_no_replace_rename(tmp_path, monkeypatch):
    def no_links(src, dst):
        raise OSError(errno.EPERM, "Operation not permitted")

    monkeypatch.setattr(tempfiles.os, "link", no_links)
    target = tmp_path / "t.txt"
    write_text(str(target), "first", overwrite=False)
    with pytest.raises(OutputExistsError):
        write_text(str(target), "second", overwrite=False)
    assert target.read_text() == "first" and os.listdir(tmp_path) == ["t.txt"]


def test_two_cli_merges_to_one_name_keep_one_file_and_one_row(sd1, tmp_path, monkeypatch):
    home = tmp_path / "home"
    env = dict(os.environ, PYTHONPATH=str(ROOT), ALLOY_HOME=str(home))
    out = tmp_path / "same.safetensors"
    procs = [
        subprocess.Popen(
            [
                sys.executable,
                "-m",
                "lib_merge",
                "merge",
                "--a",
                str(sd1[0]),
                "--b",
                str(sd1[1]),
                "--mode",
                "ws",
                "--alpha",
                str(alpha),
                "-o",
                str(out),
            ],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            env=env,
        )  # fmt: skip
        for alpha in (0.2, 0.8)
    ]
    results = [(p.wait(timeout=300), *p.communicate()) for p in procs]
    codes = sorted(code for code, _, _ in results)
    assert codes == [0, 5], results
    winner = next(stdout for code, stdout, _ in results if code == 0)
    loser = next(stderr for code, _, stderr in results if code == 5)
    assert "same.safetensors exists" in loser and loser.count("error:") == 1
    rows = read_history(home / "history.csv").rows
    assert len(rows) == 1 and rows[0].recipe_hash == winner.splitlines()[-2]
    assert _temp_names(tmp_path) == []


def test_stale_temp_files_are_cleaned_live_ones_never(tmp_path):
    dead = tmp_path / f"a.safetensors{TEMP_MARK}{_dead_pid()}-0a1b2c3d"
    dead.write_bytes(b"x" * 1000)
    temp = TempFile(str(tmp_path / "b.safetensors"))  # this live process's own
    mine, mine_path = temp.create(), temp.path
    holder = subprocess.Popen(  # another live process, holding its lock
        [sys.executable, "-c", "import sys, time; from lib_merge.io.tempfiles import TempFile; "
         "t = TempFile(sys.argv[1]); t.create(); print(t.path, flush=True); time.sleep(60)",
         str(tmp_path / "c.safetensors")],
        stdout=subprocess.PIPE, text=True, env=dict(os.environ, PYTHONPATH=str(ROOT)),
    )  # fmt: skip
    try:
        held = holder.stdout.readline().strip()
        published = tmp_path / "d.safetensors"
        published.write_bytes(b"y" * 500)
        leftover_link = tmp_path / f"d.safetensors{TEMP_MARK}{_dead_pid()}-00ff00ff"  # killed after link()
        os.link(published, leftover_link)
        report = clean_stale(str(tmp_path))
        assert sorted(report.removed) == sorted([str(dead), str(leftover_link)])
        assert report.freed == 1000  # the link's bytes still belong to the published file
        assert os.path.exists(mine_path) and os.path.exists(held) and published.read_bytes() == b"y" * 500
        assert "removed 2 stale temporary files" in report.text(str(tmp_path))
    finally:
        holder.kill()
        holder.wait()
        mine.close()
    assert str(held) in clean_stale(str(tmp_path)).removed  # its process is gone now
    assert clean_stale(str(tmp_path)).removed == [] and os.path.exists(mine_path)
    os.unlink(mine_path)


def _start_merge(sd1, out: Path, env: dict, written: int = 0) -> subprocess.Popen:
    """A CLI merge, returned once its temporary file exists (and holds more than `written` bytes)."""
    proc = subprocess.Popen(
        [sys.executable, "-m", "lib_merge", "merge", "--a", str(sd1[0]), "--b", str(sd1[1]), "--mode", "ws",
         "--threads", "1", "-o", str(out)],
        stderr=subprocess.PIPE, stdout=subprocess.PIPE, text=True, env=env,
    )  # fmt: skip
    deadline = time.monotonic() + 120

    def started() -> bool:
        try:
            return any(os.path.getsize(out.parent / name) > written for name in _temp_names(out.parent))
        except FileNotFoundError:  # published meanwhile: the poll below reports it
            return False

    while not started():
        assert proc.poll() is None and time.monotonic() < deadline, "the merge never started writing"
        time.sleep(0.002)
    return proc


def test_sigterm_is_handled_like_ctrl_c(sd1, tmp_path):
    out_dir = tmp_path / "out"
    out_dir.mkdir()
    env = dict(os.environ, PYTHONPATH=str(ROOT), ALLOY_HOME=str(tmp_path / "home"))
    proc = _start_merge(sd1, out_dir / "o.safetensors", env)
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 143, err
    assert err.strip().splitlines()[-1] == "error: terminated" and "Traceback" not in err
    assert os.listdir(out_dir) == []


def test_kill_9_leftovers_are_cleaned_by_clean_and_by_the_next_merge(sd1, tmp_path):
    out_dir = tmp_path / "out"
    out_dir.mkdir()
    env = dict(os.environ, PYTHONPATH=str(ROOT), ALLOY_HOME=str(tmp_path / "home"))
    proc = _start_merge(sd1, out_dir / "o.safetensors", env, written=0)  # bytes written: bytes to free
    proc.kill()
    proc.wait()
    (left,) = _temp_names(out_dir)
    size = os.path.getsize(out_dir / left)
    proc = subprocess.run([sys.executable, "-m", "lib_merge", "clean", str(out_dir)], capture_output=True,
                          text=True, env=env, timeout=120)  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    assert f"removed 1 stale temporary file in {out_dir}, freed " in proc.stdout and os.listdir(out_dir) == []
    assert size > 0 and f"removed {out_dir / left}" in proc.stdout
    killed = _start_merge(sd1, out_dir / "o.safetensors", env)
    killed.kill()
    killed.wait()
    again = subprocess.run(
        [sys.executable, "-m", "lib_merge", "merge", "--a", str(sd1[0]), "--b", str(sd1[1]), "--mode", "ws",
         "-o", str(out_dir / "next.safetensors")],
        capture_output=True, text=True, env=env, timeout=300,
    )  # fmt: skip
    assert again.returncode == 0, again.stderr
    assert "note: removed 1 stale temporary file in" in again.stderr
    assert sorted(os.listdir(out_dir)) == ["next.safetensors"]


_DIE_BEFORE_LOGGING = """
import os, signal, sys
from lib_merge.surfaces import cli
from lib_merge.app.history import record
def die(*args, **kwargs):
    os.kill(os.getpid(), signal.SIGKILL)
record.try_append_history = die
sys.exit(cli.main(sys.argv[1:]))
"""


def test_a_merge_killed_between_saving_and_logging_gets_its_row(sd1, tmp_path, monkeypatch):
    home = tmp_path / "home"
    monkeypatch.setenv("ALLOY_HOME", str(home))
    env = dict(os.environ, PYTHONPATH=str(ROOT), ALLOY_HOME=str(home))
    out = tmp_path / "saved.safetensors"
    args = ["merge", "--a", str(sd1[0]), "--b", str(sd1[1]), "--mode", "ws", "--alpha", "0.3", "-o", str(out)]
    died = subprocess.run([sys.executable, "-c", _DIE_BEFORE_LOGGING, *args], capture_output=True, env=env, timeout=300)
    assert died.returncode == -signal.SIGKILL and out.exists()
    assert read_history(home / "history.csv").rows == []
    cleaned = subprocess.run([sys.executable, "-m", "lib_merge", "clean", str(tmp_path)], capture_output=True,
                             text=True, env=env, timeout=120)  # fmt: skip
    assert cleaned.returncode == 0 and "logged 1 history row" in cleaned.stdout, cleaned.stderr
    (row,) = read_history(home / "history.csv").rows
    assert row.output == str(out) and row.settings["recovered"].startswith("the merge process ended")
    assert row.settings["alpha"] == 0.3 and len(row.recipe_hash) == 64
    assert os.listdir(pending_folder(home / "history.csv")) == []
    # a note whose file was replaced since (or never published) is dropped, not logged
    note = pending_folder(home / "history.csv") / f"{_dead_pid()}-00000000.json"
    note.write_text(json.dumps({"row": vars(RowDraft("x", "h", "", {}, str(out), "r")), "file": [0, 0]}))
    assert cli("clean", tmp_path).returncode == 0
    assert len(read_history(home / "history.csv").rows) == 1 and not note.exists()


def test_publish_refuses_without_touching_the_temporary_file(tmp_path):
    target = tmp_path / "t.bin"
    target.write_bytes(b"mine")
    temp = TempFile(str(target))
    f, tmp = temp.create(), temp.path
    f.write(b"new")
    f.close()
    with pytest.raises(OutputExistsError):
        publish(tmp, str(target), overwrite=False)
    assert Path(tmp).read_bytes() == b"new"  # the caller removes it
    os.unlink(tmp)


def test_merge_to_file_reports_what_it_cleaned(sd1, tmp_path):
    stale = tmp_path / f"old.safetensors{TEMP_MARK}{_dead_pid()}-12345678"
    stale.write_bytes(b"z" * 4096)
    result = merge_to_file(_recipe(*sd1[:2]), SaveOptions(str(tmp_path / "m.safetensors")))
    assert any(n.startswith("removed 1 stale temporary file in") and "4.0 KB" in n for n in result.notes)
    assert not stale.exists()


def test_cli_clean_without_leftovers_and_on_a_missing_folder(tmp_path):
    ok = cli("clean", tmp_path)
    assert ok.returncode == 0 and f"no stale temporary files in {tmp_path}" in ok.stdout
    missing = cli("clean", tmp_path / "nope")
    assert missing.returncode == 2 and "is not a folder" in error_line(missing)


def _interrupt_at(n: int, files: tuple[str, ...]):
    """A trace function that raises KeyboardInterrupt at the n-th line or return event in `files`,
    as a Ctrl+C does between any two steps; returns (tracer, events seen)."""
    seen = [0]

    def local(frame, event, arg):
        if event in ("line", "return"):
            seen[0] += 1
            if seen[0] == n:
                raise KeyboardInterrupt
        return local

    def tracer(frame, event, arg):
        return local if event == "call" and frame.f_code.co_filename.endswith(files) else None

    return tracer, seen


def _through_the_engines_file_sink(target: str) -> None:
    """What the engine does with its sink: begin, put, finish; abort on any exit once begin was called."""
    sink = FileSink(target, {})
    try:
        sink.begin([PlannedTensor("x", torch.float32, (2,))])
        sink.put("x", torch.ones(2))
        sink.finish({})
    except BaseException:
        sink.abort()
        raise


@pytest.mark.parametrize(
    "make",
    [_through_the_engines_file_sink, lambda target: write_text(target, "text", overwrite=False)],
    ids=["file_sink", "write_file"],
)
def test_an_interrupt_at_any_step_of_creating_the_temporary_file_leaves_nothing(make, tmp_path):
    """Ctrl+C between any two steps, up to and including the caller taking the file: no temp file left."""
    n = 0
    while True:
        n += 1
        target = str(tmp_path / f"o{n}.bin")
        tracer, seen = _interrupt_at(n, ("io/tempfiles.py", "io/writer.py", "engine/to_file.py"))
        sys.settrace(tracer)
        try:
            make(target)
        except KeyboardInterrupt:
            pass
        finally:
            sys.settrace(None)
        assert _temp_names(tmp_path) == [], f"left behind after an interrupt at step {n}"
        if seen[0] < n:  # ran to the end without reaching step n: every step was tried
            break
    assert n > 10
