"""The Alloy tab set (ten tabs) for the WebUI and the standalone app, wired to the workbench.

Each tab is an object with `build` and `wire` (ui/tabs.py); the page builds them in TABS order, then
wires them, then reads the model lists afresh on load, on Refresh and after every job that writes a file.
"""

from __future__ import annotations

import gradio as gr

from lib_merge.app.optimize.desk import OptimizeDesk
from lib_merge.app.plots.desk import PlotDesk
from lib_merge.app.workbench import Workbench
from lib_merge.ui.adjust_tab import AdjustTab
from lib_merge.ui.analysis_tab import AnalysisTab
from lib_merge.ui.compat import update
from lib_merge.ui.dice_tab import DiceTab
from lib_merge.ui.history_tab import HistoryTab
from lib_merge.ui.lists import ModelLists
from lib_merge.ui.lora_tab import LoraTab
from lib_merge.ui.mbw_tab import MbwTab
from lib_merge.ui.merge_tab import MergeTab
from lib_merge.ui.optimize_tab import OptimizeTab
from lib_merge.ui.tabs import Page, Tab
from lib_merge.ui.toolkit_tab import ToolkitTab
from lib_merge.ui.xyz_tab import XyzTab

# In page order; a tab may use the components of those before it while it builds.
TABS: tuple[Tab, ...] = (
    MergeTab(), MbwTab(), XyzTab(), AdjustTab(), DiceTab(), LoraTab(), ToolkitTab(), AnalysisTab(), HistoryTab(),
    OptimizeTab(),
)  # fmt: skip
TAB_LABELS = tuple(tab.label for tab in TABS)


def follow_checkpoint(selector, model_a, host) -> None:
    """Model A follows the host's checkpoint selector: the title chosen there, or model A of a loaded merge."""

    def follow(choice):
        # Forge and Neo list file names; their own handler of the same event may not have set the option yet
        title = (host.webui.checkpoint_title(choice) if choice else None) or host.selected_checkpoint()
        return update(value=title) if title else update()

    selector.change(follow, [selector], [model_a])


def build_ui(workbench: Workbench, desk: PlotDesk | None = None, studies: OptimizeDesk | None = None) -> gr.Blocks:
    """The tabs over one workbench; the plot desk and the studies are shared with the HTTP routes when the
    caller has them."""
    page = Page(workbench, desk or PlotDesk(workbench), studies or OptimizeDesk(workbench))
    with gr.Blocks(analytics_enabled=False, title="Alloy") as demo:
        with gr.Tabs(elem_id="alloy_tabs"):
            for tab in TABS:
                with gr.Tab(tab.label, elem_id=f"alloy_tab_{tab.key}") as tab_page:
                    page.tab_pages[tab.key] = tab_page
                    tab.build(page)
        for tab in TABS:
            tab.wire(page)
        lists = ModelLists(page.checkpoint_lists, page.lora_lists)
        lists.wire(demo, workbench.host, page.refresh_buttons, page.writing)
        for load, outputs in page.page_loads:
            demo.load(load, [], outputs, queue=False)
    return demo
