"""The tabs' checkpoint and LoRA lists, read again when the page loads and after every job that writes a
file: a merge saved since the server started is offered on a fresh page without pressing Refresh."""

from __future__ import annotations

from dataclasses import dataclass, field

from lib_merge.app.lora import lora_names
from lib_merge.app.ports import ModelFiles
from lib_merge.ui.compat import update


@dataclass
class ModelLists:
    checkpoints: list = field(default_factory=list)  # dropdowns of checkpoint titles
    loras: list = field(default_factory=list)  # dropdowns of LoRA names

    def outputs(self) -> list:
        return self.checkpoints + self.loras

    def fresh(self, host: ModelFiles) -> list:
        """An update per dropdown with the lists as they are on disk now (the chosen values stay)."""
        host.refresh_checkpoints()
        titles, names = host.checkpoint_titles(), lora_names(host.lora_folder())
        return [update(choices=titles) for _ in self.checkpoints] + [update(choices=names) for _ in self.loras]

    def wire(self, demo, host: ModelFiles, refresh_buttons: list, writing_events: list) -> None:
        """Read the lists when the page loads, when a Refresh button is pressed and after each writing job."""
        outputs = self.outputs()

        def fresh() -> list:
            return self.fresh(host)

        demo.load(fresh, [], outputs, queue=False)
        for button in refresh_buttons:
            button.click(fresh, [], outputs, queue=False)
        for event in writing_events:
            event.then(fresh, [], outputs, queue=False)
