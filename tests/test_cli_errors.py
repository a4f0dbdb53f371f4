"""No traceback from any command on any input: one `error:` line and a documented exit code."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest
from test_cli import ROOT, cli

from lib_merge.surfaces.cli import main

DOCUMENTED = {2, 3, 4, 5, 6}


@pytest.fixture
def files(tmp_path, sd1):
    (tmp_path / "not_json.json").write_text("{nope")
    (tmp_path / "deep.json").write_text("[" * 100_000 + "]" * 100_000)
    (tmp_path / "plan_types.json").write_text(json.dumps({"x": {"type": 3, "values": ["a"]}, "merge": []}))
    (tmp_path / "plan_axis.json").write_text(json.dumps({"x": {"type": "alpha", "values": "x"}}))
    (tmp_path / "plan_list.json").write_text("[1, 2]")
    (tmp_path / "damaged.safetensors").write_bytes(b"\xff" * 64)
    (tmp_path / "truncated.safetensors").write_bytes(sd1[0].read_bytes()[:5000])
    (tmp_path / "binary.alloy").write_bytes(b"\x00\xff\xfe")
    (tmp_path / "empty.alloy").write_text("")
    (tmp_path / "folder.alloy").mkdir()
    return tmp_path


def _bad_calls(d, sd1):
    a, b = str(sd1[0]), str(sd1[1])
    out = str(d / "o.safetensors")
    return [
        ["merge"],
        ["merge", "--a", a, "--b", b, "--mode", "ws"],
        ["merge", "--a", a, "--b", b, "--mode", "nope", "-o", out],
        ["merge", "--a", a, "--b", b, "--mode", "ws", "--alpha", "nan", "-o", out],
        ["merge", "--a", a, "--b", b, "--mode", "ws", "--threads", "0", "-o", out],
        ["merge", "--a", a, "--b", b, "--mode", "ws", "--threads", "x", "-o", out],
        ["merge", "--a", a, "--b", str(d / "missing.safetensors"), "--mode", "ws", "-o", out],
        ["merge", "--a", a, "--b", str(d / "damaged.safetensors"), "--mode", "ws", "-o", out],
        ["merge", "--a", a, "--b", str(d / "truncated.safetensors"), "--mode", "ws", "-o", out],
        ["merge", "--a", a, "--b", b, "--mode", "ws", "-o", str(d / "no" / "such" / "dir.safetensors")],
        ["merge", "--a", a, "--b", b, "--mode", "ws", "-o", a],
        ["merge", "--a", a, "--b", b, "--mode", "ws", "--device", "quantum", "-o", out],
        ["merge", "--a", a, "--b", b, "--mode", "ws", "--blocks", "IN99=1", "-o", out],
        ["merge", "--a", a, "--b", b, "--mode", "ws", "--elemental", ":::", "-o", out],
        ["merge", "--a", a, "--models", b, "--method", "nope", "-o", out],
        ["merge", str(d / "binary.alloy"), "-o", out],
        ["merge", str(d / "empty.alloy"), "-o", out],
        ["merge", str(d / "folder.alloy"), "-o", out],
        ["merge", str(d / "missing.alloy"), "-o", out],
        ["recipe", "print", str(d / "binary.alloy")],
        ["recipe", "hash", str(d / "missing.alloy")],
        ["recipe", "explode", str(d / "empty.alloy")],
        ["recipe", "compose", str(d / "empty.alloy"), "-p", "x", "1"],
        ["recipe", "from-mecha", str(d / "binary.alloy")],
        ["recipe", "from-mecha", str(d / "missing.mecha")],
        ["inspect", str(d / "missing.safetensors")],
        ["inspect", str(d / "damaged.safetensors")],
        ["inspect", str(d / "truncated.safetensors")],
        ["inspect", str(d)],
        ["info", "nope"],
        ["info", str(d / "damaged.safetensors")],
        ["synth", "sd9", out],
        ["synth", "sd1", out, "--scale", "0"],
        ["synth", "sd1", out, "--channels", "5"],
        ["synth", "sd1", str(d / "no" / "dir.safetensors")],
        ["synth", "sd1", a],
        ["history"],
        ["history", "show", "x"],
        ["history", "show", "99"],
        ["history", "list", "--limit", "many"],
        ["history", "list", "--file", str(d)],
        ["history", "import-supermerger", str(d / "missing.csv")],
        ["xyz", str(d / "missing.json")],
        ["xyz", str(d / "not_json.json")],
        ["xyz", str(d / "deep.json")],
        ["xyz", str(d / "plan_types.json")],
        ["xyz", str(d / "plan_axis.json")],
        ["xyz", str(d / "plan_list.json")],
        ["xyz", str(d / "plan_axis.json"), "--schema", "sd9"],
        ["ui", "--port", "x"],
        ["ui", "--host", "0.0.0.0"],
        ["ui", "--auth", "nocolon"],
        ["clean", str(d / "missing")],
        ["explode"],
        ["--no-such-flag"],
    ]


def test_every_command_with_bad_arguments_says_one_error_line(files, sd1, capsys, monkeypatch):
    monkeypatch.setenv("ALLOY_HOME", str(files / "home"))
    for argv in _bad_calls(files, sd1):
        code = main(argv)
        captured = capsys.readouterr()
        errors = [line for line in captured.err.splitlines() if line.startswith("error:")]
        assert code in DOCUMENTED, (argv, code, captured.err)
        assert len(errors) == 1, (argv, captured.err)
        assert "Traceback" not in captured.err + captured.out, argv
    assert not (files / "o.safetensors").exists()


def test_no_arguments_prints_the_usage(capsys):
    assert main([]) == 0
    out = capsys.readouterr().out
    assert out.startswith("usage: python -m lib_merge") and "merge" in out and "clean" in out


def test_methods_lists_every_method(capsys):
    from lib_merge.methods import METHODS

    assert main(["methods"]) == 0
    out = capsys.readouterr().out
    assert all(f"  {name}(" in out for name in METHODS)
    assert 'adjust(x, "VALUES")' in out and 'lora(x, "FILE", strength=1.0)' in out  # text values follow the models
    assert "calc modes (--calc)" in out


def test_a_closed_pipe_ends_quietly():
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    proc = subprocess.run(
        f'"{sys.executable}" -m lib_merge info sd1 -v | head -1', shell=True, capture_output=True, text=True, env=env
    )
    assert proc.stdout.count("\n") == 1 and proc.stderr == "", proc.stderr


def test_the_standalone_app_refuses_exposure_without_auth(capsys):
    assert main(["ui", "--host", "0.0.0.0"]) == 3
    err = capsys.readouterr().err
    assert "give --auth USER:PASS (or --insecure" in err
    assert main(["ui", "--auth", "user"]) == 3


def test_unused_alpha_is_warned_about(sd1, tmp_path):
    proc = cli("merge", "--a", sd1[0], "--b", sd1[1], "--mode", "ws", "--preset", "GRAD_V", "--alpha", "0.3",
               "-o", tmp_path / "o.safetensors", "--no-history")  # fmt: skip
    assert proc.returncode == 0 and "warning: --alpha 0.3 is not used: the block vector sets every block" in proc.stderr
    quiet = cli("merge", "--a", sd1[0], "--b", sd1[1], "--mode", "ws", "--blocks", "IN00=1", "--alpha", "0.3",
                "-o", tmp_path / "p.safetensors", "--no-history")  # fmt: skip
    assert quiet.returncode == 0 and "warning" not in quiet.stderr


def test_the_command_works_from_any_folder_once_set_up(tmp_path):
    """The README's setup installs Alloy (editable), so no PYTHONPATH or repository folder is needed."""
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    proc = subprocess.run([sys.executable, "-m", "lib_merge", "methods"], cwd=tmp_path, env=env, capture_output=True,
                          text=True, timeout=120)  # fmt: skip
    assert proc.returncode == 0 and "weighted_sum(" in proc.stdout, proc.stderr


def test_whatever_unwinds_after_a_signal_reports_the_signal(capsys):
    """A SIGINT that lands inside a lock wait surfaces as RuntimeError("release unlocked lock"); a worker
    sees Cancelled. Either way the user pressed Ctrl-C (or the system sent SIGTERM): that is the answer."""
    from lib_merge.errors import Cancelled
    from lib_merge.surfaces.cli import _failure

    assert _failure(RuntimeError("release unlocked lock"), ["cancelled"]) == 130
    assert capsys.readouterr().err == "error: cancelled\n"
    assert _failure(Cancelled("merge cancelled"), ["terminated"]) == 143
    assert capsys.readouterr().err == "error: terminated\n"
    assert _failure(RuntimeError("boom"), []) == 1
    assert "unexpected RuntimeError: boom" in capsys.readouterr().err
