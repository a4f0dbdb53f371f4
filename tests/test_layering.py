"""The package is layered one way: surfaces and ui → app → engine → recipe, io → methods, arch.

Imports are read from the source, including those inside functions, so a cycle hidden by a
late import still fails here.
"""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tools"))
from structure_report import cycles, module_graph, package_graph, package_of, read_package  # noqa: E402

MODULES = read_package("lib_merge")
CORE = ("app", "engine", "recipe", "io", "lora", "rebasin", "toolkit", "analysis", "methods", "arch")
# What each layer may import from the project (besides the foundation modules errors and paths).
ALLOWED = {
    "arch": set(),
    "methods": set(),
    "recipe": {"methods", "arch"},
    "io": {"arch"},
    "lora": {"io", "methods", "arch"},
    "rebasin": {"io", "methods", "arch"},
    "toolkit": {"io", "arch"},
    "analysis": {"io", "arch"},
    "engine": {"recipe", "io", "lora", "rebasin", "methods", "arch"},
    "app": {"engine", "recipe", "io", "lora", "rebasin", "toolkit", "analysis", "methods", "arch"},
    "host": {"app", "engine", "recipe", "io", "lora", "rebasin", "toolkit", "analysis", "methods", "arch"},
    "ui": {"app", "engine", "recipe", "io", "lora", "rebasin", "toolkit", "analysis", "methods", "arch"},
    "surfaces": {
        "host",
        "ui",
        "app",
        "engine",
        "recipe",
        "io",
        "lora",
        "rebasin",
        "toolkit",
        "analysis",
        "methods",
        "arch",
    },  # fmt: skip
}
FOUNDATION = {"lib_merge", "lib_merge.errors", "lib_merge.paths", "lib_merge.__main__"}
FORBIDDEN_OUTSIDE = {"gradio", "fastapi", "starlette", "uvicorn", "modules", "modules_forge", "networks"}


def _layer(module: str) -> str | None:
    parts = module.split(".")
    return parts[1] if len(parts) > 2 or (len(parts) == 2 and parts[1] in ALLOWED) else None


def test_every_module_belongs_to_a_layer_or_the_foundation():
    loose = [m for m in MODULES if m not in FOUNDATION and _layer(m) not in ALLOWED]
    assert not loose, f"modules outside every layer: {loose}"


@pytest.mark.parametrize("layer", CORE)
def test_core_layers_never_import_a_ui_a_server_or_the_webui(layer):
    offenders = {
        name: sorted(m.external & FORBIDDEN_OUTSIDE)
        for name, m in MODULES.items()
        if _layer(name) == layer and m.external & FORBIDDEN_OUTSIDE
    }
    assert not offenders, offenders


@pytest.mark.parametrize("layer", sorted(ALLOWED))
def test_imports_run_down_the_layers_only(layer):
    upward = sorted(
        f"{name} -> {target}"
        for name, m in MODULES.items()
        if _layer(name) == layer
        for target in m.imports
        if target not in FOUNDATION and _layer(target) not in ALLOWED[layer] | {layer}
    )
    assert not upward, upward


def test_no_import_cycles_between_packages_or_modules():
    assert cycles(package_graph(MODULES)) == []
    assert cycles(module_graph(MODULES)) == []


def test_the_walk_sees_imports_inside_functions_and_finds_a_cycle():
    """The checker itself: a late import that closes a loop is found."""
    graph = module_graph(MODULES)
    graph = {k: set(v) for k, v in graph.items()}
    graph["lib_merge.methods.classic"].add("lib_merge.surfaces.cli.merge")
    assert any("lib_merge.methods.classic" in group for group in cycles(graph))
    cli = MODULES["lib_merge.surfaces.cli.merge"]
    assert package_of("lib_merge.engine.run") == "lib_merge.engine"
    late = [t for t in cli.imports if t.startswith("lib_merge.engine")]
    assert late, "the CLI imports the engine inside its commands; the walk must see it"
