"""What the tabs share while the Alloy page is built and then wired: a tab is an object with `build` and
`wire`, and a new tab is one file and one entry in ui/app.py's TABS."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Protocol

from lib_merge.app.optimize.desk import OptimizeDesk
from lib_merge.app.plots.desk import PlotDesk
from lib_merge.app.ports import Host
from lib_merge.app.workbench import Workbench
from lib_merge.ui.form import Form


@dataclass
class Page:
    """The page under construction: every tab's components, and the lists and events that span tabs."""

    workbench: Workbench
    desk: PlotDesk
    studies: OptimizeDesk
    widgets: dict = field(default_factory=dict)  # the merge form's fields (Merge, MBW and Adjust fill them)
    parts: dict[str, dict] = field(default_factory=dict)  # each tab's own components, by the tab's key
    tab_pages: dict[str, Any] = field(default_factory=dict)  # each tab's gr.Tab, by key (opening one may load data)
    writing: list = field(default_factory=list)  # events that may write a checkpoint or LoRA file
    checkpoint_lists: list = field(default_factory=list)  # dropdowns of checkpoint titles, read afresh together
    lora_lists: list = field(default_factory=list)  # dropdowns of LoRA names
    refresh_buttons: list = field(default_factory=list)
    page_loads: list[tuple[Any, list]] = field(default_factory=list)  # (function, outputs) run when a page loads

    @property
    def host(self) -> Host:
        return self.workbench.host

    @property
    def form(self) -> Form:
        return Form(self.widgets)


class Tab(Protocol):
    key: str  # the elem_id is alloy_tab_<key>
    label: str

    def build(self, page: Page) -> None:
        """Create the tab's components (inside its gr.Tab) into `page`."""
        ...

    def wire(self, page: Page) -> None:
        """Connect its events, once every tab is built (a tab may use another's components)."""
        ...
