"""Every CLI subcommand: its --help, and one normal call as a user types it."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
import urllib.request
from dataclasses import asdict

import pytest
from test_cli import ROOT, cli

from lib_merge.app.history import read_history
from lib_merge.app.requests import MergeRequest, SaveRequest
from lib_merge.app.workbench import Workbench
from lib_merge.host.folder import FolderHost
from lib_merge.methods import METHODS
from lib_merge.recipe.form import MergeSettings
from lib_merge.surfaces.cli import COMMANDS

HISTORY_COMMANDS = ("list", "search", "show", "import-supermerger")


@pytest.mark.parametrize("command", sorted(COMMANDS))
def test_every_command_has_help(command):
    proc = cli(command, "--help")
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.startswith(f"usage: python -m lib_merge {command}") and proc.stderr == ""


@pytest.mark.parametrize("sub", HISTORY_COMMANDS)
def test_every_history_command_has_help(sub):
    proc = cli("history", sub, "--help")
    assert proc.returncode == 0 and proc.stdout.startswith(f"usage: python -m lib_merge history {sub}")


def test_no_command_prints_the_help_and_lists_every_command():
    proc = cli()
    assert proc.returncode == 0
    assert all(command in proc.stdout for command in COMMANDS)


def test_merge_and_history_rows_have_the_workbench_format(sd1, tmp_path, monkeypatch):
    """The CLI logs its merge through the same code as the Workbench: one settings format."""
    monkeypatch.setenv("ALLOY_HOME", str(tmp_path / "home"))
    out = tmp_path / "cli.safetensors"
    proc = cli("merge", "--a", sd1[0], "--b", sd1[1], "--mode", "ws", "--alpha", "0.3", "-o", out)
    assert proc.returncode == 0, proc.stderr
    models = tmp_path / "models"
    models.mkdir()
    for path in sd1[:2]:
        os.link(path, models / path.name)
    bench = Workbench(FolderHost(str(models)))
    settings = MergeSettings(sd1[0].name, sd1[1].name, "ws", alpha=0.3)
    bench.merge(MergeRequest(settings, save=SaveRequest(name="ui", dtype="fp16")))
    cli_row, ui_row = read_history(bench.history_path()).rows
    assert cli_row.output == str(out) and ui_row.output == str(models / "ui.safetensors")
    assert cli_row.recipe_hash == ui_row.recipe_hash and cli_row.models == ui_row.models
    assert set(cli_row.settings) == set(ui_row.settings)
    # Every field of the save request, at its default unless given (fp8's clamp among them).
    assert cli_row.settings["save"] == asdict(SaveRequest(name="cli", dtype="fp16"))
    assert cli_row.settings["save"]["format"] == "safetensors" and cli_row.settings["save"]["clamp"] is False
    assert set(ui_row.settings["save"]) == set(cli_row.settings["save"])
    for key in ("mode", "alpha", "calc", "seed", "blocks"):
        assert cli_row.settings[key] == ui_row.settings[key], key
    shown = cli("history", "show", str(cli_row.id))
    assert shown.returncode == 0 and cli_row.recipe_hash in shown.stdout


def test_methods_lists_every_registered_method():
    proc = cli("methods")
    assert proc.returncode == 0
    assert all(f"  {name}(" in proc.stdout for name in METHODS)


def test_recipe_inspect_info_and_xyz(sd1, tmp_path):
    recipe = tmp_path / "r.alloy"
    recipe.write_text(f'alloy-recipe 1\nA = model("{sd1[0]}")\nB = model("{sd1[1]}")\nmerged = slerp(A, B)\n')
    printed = cli("recipe", "print", recipe)
    assert printed.returncode == 0 and "merged = slerp(A, B, alpha=0.5)" in printed.stdout
    assert "sha256=" in printed.stdout
    inspected = cli("inspect", sd1[0], "--json")
    assert inspected.returncode == 0 and json.loads(inspected.stdout)["architecture"] == "sd1"
    info = cli("info", "sd1")
    assert info.returncode == 0 and "IN00" in info.stdout
    plan = tmp_path / "plan.json"
    plan.write_text(json.dumps({"x": {"type": "alpha", "values": "0.2, 0.8"}, "merge": {"a": "a", "b": "b"}}))
    dry = cli("xyz", plan, "--schema", "sd1")
    assert dry.returncode == 0 and "2 cells, 2 merges, schema sd1" in dry.stdout


def test_synth_then_clean(tmp_path):
    out = tmp_path / "tiny.safetensors"
    made = cli("synth", "sd1", out, "--scale", "64")
    assert made.returncode == 0, made.stderr
    assert json.loads(cli("inspect", out, "--json").stdout)["architecture"] == "sd1"
    stale = tmp_path / "x.safetensors.alloy-tmp-999999999-0a"
    stale.write_bytes(b"\0" * 1024)
    cleaned = cli("clean", tmp_path)
    assert cleaned.returncode == 0, cleaned.stderr
    assert not stale.exists() and out.exists()


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_ui_serves_the_tabs_and_the_api(sd1, tmp_path):
    pytest.importorskip("gradio")
    port = _free_port()
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    server = subprocess.Popen(
        [sys.executable, "-m", "lib_merge", "--models-dir", str(sd1[0].parent), "ui", "--port", str(port)],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    try:
        deadline = time.time() + 120
        while True:
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/alloy/v1/status", timeout=5) as answer:
                    status = json.loads(answer.read())
                break
            except OSError:
                assert server.poll() is None, server.stdout.read()
                assert time.time() < deadline, "the UI did not start"
                time.sleep(0.5)
        assert status["merged"] is False
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/", timeout=10) as page:
            assert page.status == 200
    finally:
        server.terminate()
        server.wait(30)
