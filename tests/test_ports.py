"""Hosts as small ports (app/ports.py): each host offers the ports it has and None for the others, the
application asks for a port instead of probing attributes, and a host with model files and a live model
only (no generation, no WebUI tab) gets in-place merges without the Gen buttons."""

from __future__ import annotations

import inspect
import re
import shutil
from pathlib import Path

import pytest
import torch
from helpers import build_model, load
from test_apply import ModuleHost, ModuleModel
from test_ui import by_elem_id, handler, last

from lib_merge.app.ports import Generation, Host, LiveModel, ModelFiles, WebUIIntegration, patchable
from lib_merge.app.workbench import Workbench
from lib_merge.errors import ParameterError
from lib_merge.host.a1111 import A1111Host
from lib_merge.host.folder import FolderHost
from lib_merge.host.forge import ForgeHost

PACKAGE = Path(__file__).resolve().parent.parent / "lib_merge"


def members(port: type) -> set[str]:
    """What a port asks of a host: its methods and attributes (those of the ports it extends included)."""
    names = set()
    for cls in port.__mro__:
        if cls.__module__ == "lib_merge.app.ports":
            names |= {
                n for n, v in vars(cls).items() if not n.startswith("_") and (callable(v) or isinstance(v, property))
            }
            names |= set(getattr(cls, "__annotations__", {}))
    return names


def implements(host: object, port: type) -> bool:
    return all(hasattr(host, name) for name in members(port))


def test_each_host_offers_its_ports_and_none_for_the_rest(tmp_path):
    a1111, forge, folder = A1111Host(), ForgeHost(), FolderHost(str(tmp_path))
    for host in (a1111, forge, folder):
        assert implements(host, Host), host
    assert a1111.live is a1111.generation is a1111.webui is a1111 and patchable(a1111) is a1111
    for port in (LiveModel, Generation, WebUIIntegration):
        assert implements(a1111, port) and implements(forge, port)
    assert forge.live is forge and patchable(forge) is None  # no component modules here: save and load
    assert folder.live is folder.generation is folder.webui is patchable(folder) is None
    assert members(ModelFiles) < members(Host)
    assert not any(hasattr(folder, name) for name in members(Generation) | members(LiveModel))


def test_nothing_probes_a_host_for_its_features():
    """The UI and the plot runner ask for a port (`host.generation`, `host.webui`, …), never hasattr/getattr."""
    probe = re.compile(r"\b(?:hasattr|getattr)\(\s*[\w.]*host\b")
    found = [
        f"{path.relative_to(PACKAGE)}:{number}"
        for path in PACKAGE.rglob("*.py")
        for number, line in enumerate(path.read_text().splitlines(), 1)
        if probe.search(line)
    ]
    assert found == []


def test_the_ports_protocols_are_small():
    for port in (ModelFiles, LiveModel, Generation, WebUIIntegration):
        assert len(members(port)) <= 10, (port.__name__, sorted(members(port)))
        assert inspect.getdoc(port), port.__name__  # says what Alloy does without it


@pytest.fixture
def live_only(tmp_path, sd1):
    """A host with the model files of a folder and model A loaded in a module: no generation, no WebUI."""
    folder = tmp_path / "models"
    folder.mkdir()
    for src in sd1[:2]:
        shutil.copy(src, folder / src.name)
    live = ModuleModel(build_model(load(sd1[0]), torch.float16), str(folder / sd1[0].name))
    return ModuleHost(str(folder), live)


def test_a_host_with_a_live_model_and_no_generation_merges_in_place_from_the_merge_tab(live_only, sd1):
    from lib_merge.ui.app import build_ui

    workbench = Workbench(live_only)
    demo = build_ui(workbench)
    assert not by_elem_id(demo, "alloy_gen").visible and not by_elem_id(demo, "alloy_merge_gen").visible
    assert by_elem_id(demo, "alloy_restore").visible and by_elem_id(demo, "alloy_merge").value == "Merge"
    fn, inputs = handler(demo, "alloy_merge")
    ids = [c.elem_id for c in inputs]
    values = [c.value for c in inputs]
    values[ids.index("alloy_model_a")] = sd1[0].name
    values[ids.index("alloy_model_b")] = sd1[1].name
    status, _, footer = last(fn(*values))
    assert status.startswith("Merged") and "into the loaded model" in status, status
    assert "Mode: in place" in footer and live_only.live.identity is not None
    assert not list(Path(live_only.models_dir).glob("*alloy*"))  # nothing written
    with pytest.raises(ParameterError, match="cannot generate"):
        workbench.generate(None)
    assert workbench.restore().startswith("Restored")
    assert live_only.live.identity is None
