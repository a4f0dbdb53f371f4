"""Adjust tab: eight numbers applied to six UNet keys after the merge; all 0 = off."""

from __future__ import annotations

import gradio as gr

from lib_merge.ui.tabs import Page
from lib_merge.ui.values import ADJUST_LABELS


class AdjustTab:
    key, label = "adjust", "Adjust"

    def build(self, page: Page) -> None:
        gr.Markdown("Detail (IN, OUT, OUT2) and colour of the merged model; all zero leaves it off.")
        sliders = []
        with gr.Row():
            for i, label in enumerate(ADJUST_LABELS):
                low = -6 if i < 3 else -10
                sliders.append(gr.Slider(low, -low, value=0, step=0.01, label=label, elem_id=f"alloy_adjust_{i}"))
        page.widgets["adjust"] = sliders  # a field of the merge form

    def wire(self, page: Page) -> None:
        """Its values are read by the Merge tab's buttons."""
