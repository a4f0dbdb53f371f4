"""Dice tab: random block weights from a seed; Run rolls N times as an XYZ plot."""

from __future__ import annotations

import gradio as gr

from lib_merge.app.dice import DEFAULT_CUSTOM, MODES
from lib_merge.ui.tabs import Page


def build() -> dict:
    parts: dict = {}
    gr.Markdown("Random block weights for the Merge tab's models and mode. Same seed, same weights.")
    with gr.Row():
        parts["dice_mode"] = gr.Dropdown(list(MODES[1:]), value="R", label="Mode", elem_id="alloy_dice_mode")
        parts["dice_target"] = gr.Radio(["alpha", "beta", "both"], value="alpha", label="Target",
                                        elem_id="alloy_dice_target")  # fmt: skip
        parts["dice_seed"] = gr.Number(value=-1, precision=0, label="Seed (-1: random)", elem_id="alloy_dice_seed")
        parts["dice_rolls"] = gr.Number(value=1, precision=0, label="Number of rolls", elem_id="alloy_dice_rolls")
        parts["dice_round"] = gr.Number(value=3, precision=0, label="Round to decimals", elem_id="alloy_dice_round")
        parts["dice_extended"] = gr.Checkbox(label="Extended SDXL (110)", value=False, elem_id="alloy_dice_extended")
    parts["dice_custom"] = gr.Textbox(value=DEFAULT_CUSTOM, label="Custom vector (numbers or R, U, X, D, ER, EU, EX)",
                                      elem_id="alloy_dice_custom")  # fmt: skip
    with gr.Row():
        parts["dice_upper"] = gr.Textbox(label="u (X: from, D: centre); one number or a vector", elem_id="alloy_dice_u")
        parts["dice_lower"] = gr.Textbox(label="l (X: to, D: width; 0.3R0.7 = chance)", elem_id="alloy_dice_l")
        parts["dice_clamp_max"] = gr.Textbox(label="Clamp max", elem_id="alloy_dice_max")
        parts["dice_clamp_min"] = gr.Textbox(label="Clamp min", elem_id="alloy_dice_min")
    with gr.Row():
        parts["dice_roll"] = gr.Button("Roll (preview)", elem_id="alloy_dice_preview")
        parts["dice_run"] = gr.Button("Run", variant="primary", elem_id="alloy_dice_run")
        parts["dice_elist"] = gr.Button("Save E-list of the loaded merge", elem_id="alloy_dice_elist")
    parts["dice_status"] = gr.Markdown("", elem_id="alloy_dice_status")
    parts["dice_vectors"] = gr.Textbox(label="Rolled weights", lines=3, elem_id="alloy_dice_vectors")
    return parts


class DiceTab:
    key, label = "dice", "Dice"

    def build(self, page: Page) -> None:
        page.parts[self.key] = build()

    def wire(self, page: Page) -> None:
        """Wired by the XYZ tab: a Dice run is a plot on its desk (xyz_tab._wire_dice)."""
