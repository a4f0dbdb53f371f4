"""What scripts/alloy.py registers in the WebUI: the tab, the settings, the API routes, the callbacks.

The WebUI re-executes script files on "Reload UI" but keeps imported packages, so the one
workbench (and with it the live merge's backups) lives here, not in the script module.
"""

from __future__ import annotations

import threading

from lib_merge.app.optimize.desk import OptimizeDesk
from lib_merge.app.plots.desk import PlotDesk
from lib_merge.app.workbench import Workbench
from lib_merge.host.a1111 import A1111Host, connect

_desks: list[tuple[PlotDesk, OptimizeDesk]] = []  # the WebUI forces one process-wide instance (its workbench
# holds the live merge; one study at a time runs on it)


def _both() -> tuple[PlotDesk, OptimizeDesk]:
    if not _desks:
        from lib_merge.host.forge import ForgeHost, is_forge

        bench = Workbench(ForgeHost() if is_forge() else A1111Host())
        _desks.append((PlotDesk(bench), OptimizeDesk(bench)))
    return _desks[0]


def desk() -> PlotDesk:
    return _both()[0]


def studies() -> OptimizeDesk:
    return _both()[1]


def workbench() -> Workbench:
    return desk().workbench


def register() -> None:
    """Called at import of scripts/alloy.py (the WebUI clears callbacks before a reload)."""
    from modules import script_callbacks

    script_callbacks.on_ui_tabs(ui_tabs)
    script_callbacks.on_ui_settings(ui_settings)
    script_callbacks.on_app_started(app_started)
    script_callbacks.on_after_component(after_component)
    connect(workbench())


MODEL_A = "alloy_model_a"
CHECKPOINT_SELECTOR = "setting_sd_model_checkpoint"  # the WebUI's checkpoint dropdown (quicksettings)


def after_component(component, **kwargs) -> None:
    """Model A follows the WebUI's checkpoint dropdown: our tab is built first, the dropdown later.
    Gradio 4 also builds a component anew, outside any Blocks, for each property update it sends (Forge
    Neo's page load sends the dropdown its choices), and the WebUI reports that copy here too: it takes
    no event, so only a dropdown built inside the page's Blocks is followed."""
    elem_id = kwargs.get("elem_id") or getattr(component, "elem_id", None)
    components = workbench().host.components
    if elem_id == MODEL_A:
        components[MODEL_A] = component
    elif elem_id == CHECKPOINT_SELECTOR and MODEL_A in components and _inside_blocks():
        from lib_merge.ui.app import follow_checkpoint

        follow_checkpoint(component, components[MODEL_A], workbench().host)


def _inside_blocks() -> bool:
    """Whether a component made now is part of a Blocks being built (Gradio refuses events otherwise)."""
    from gradio.context import Context

    return Context.root_block is not None


def ui_tabs():
    from lib_merge.ui.app import build_ui

    return [(build_ui(workbench(), desk(), studies()), "Alloy", "alloy")]


def ui_settings() -> None:
    import gradio as gr
    from modules import shared

    section = ("alloy", "Alloy")
    options = {
        "alloy_cache_budget": shared.OptionInfo(
            "auto",
            "RAM for repeated merges, the loaded model's backups included: auto (25% of available RAM, at most "
            "16 GiB), GiB, or 0 for off",
            section=section,
        ),
        "alloy_device": shared.OptionInfo(
            "cpu", "Merge on this device", gr.Dropdown, {"choices": ["cpu", "cuda", "mps"]}, section=section
        ),
        "alloy_compute_dtype": shared.OptionInfo(
            "fp32", "Compute dtype of merges", gr.Radio, {"choices": ["fp32", "bf16", "fp16"]}, section=section
        ),
        "alloy_history_file": shared.OptionInfo(
            "", "History file (empty: user-data/history.csv in the extension folder)", section=section
        ),
        "alloy_autoprune_folder": shared.OptionInfo(
            "", "Autoprune at start: a folder in the models folder, e.g. Autoprune (empty: off)", section=section
        ),
        "alloy_fetch_scorer_models": shared.OptionInfo(
            False,
            "Optimize: fetch the built-in scorers' public weights once into user-data/scorer-models (CLIP ViT-L/14 "
            "from Hugging Face, about 1.7 GB; LAION's aesthetic predictor from GitHub)",
            section=section,
        ),
        "alloy_save_dtype": shared.OptionInfo(
            "fp16", "Default dtype of saved merges", gr.Radio, {"choices": ["fp16", "bf16", "fp32"]}, section=section
        ),
    }
    for key, info in options.items():
        shared.opts.add_option(key, info)


def app_started(demo, app) -> None:
    from modules import shared

    from lib_merge.surfaces.http import add_routes, parse_credentials

    credentials = parse_credentials(getattr(shared.cmd_opts, "api_auth", None))
    add_routes(app, workbench(), credentials, desk(), studies())
    for line in workbench().clean_leftovers():
        print(f"Alloy: {line}", flush=True)
    threading.Thread(target=_autoprune_at_start, name="alloy-autoprune", daemon=True).start()


def _autoprune_at_start() -> None:
    for line in workbench().autoprune_at_start():
        print(f"Alloy: {line}", flush=True)
