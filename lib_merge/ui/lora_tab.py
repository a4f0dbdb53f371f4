"""LoRA tab: LoRAs of the LoRA folder as `name:strength[:blocks]` lines, baked into the loaded model or
a file, merged into one LoRA, or a LoRA extracted from two checkpoints."""

from __future__ import annotations

import gradio as gr

from lib_merge.app.lora import lora_names, lora_reports, loras_in_prompt
from lib_merge.app.ports import patchable
from lib_merge.app.requests import LoraBakeRequest, LoraExtractRequest, LoraMergeRequest, SaveRequest
from lib_merge.app.workbench import Workbench
from lib_merge.errors import ParameterError
from lib_merge.ui.compat import update
from lib_merge.ui.jobs import error_text, run_in_thread
from lib_merge.ui.merge_events import prompt_boxes
from lib_merge.ui.tabs import Page

LINES_HELP = (
    "LoRAs, one per line: name:strength[:blocks] (blocks: a preset such as OUTD, or 17/26 values SD1, 12/20 SDXL)"
)


def build(workbench: Workbench, prompts: list) -> dict:
    """The tab's components; `prompts` are the prompt boxes "Get from prompt" reads (may be empty)."""
    host = workbench.host
    parts: dict = {}
    gr.Markdown(
        "Bake LoRAs into the loaded model (Restore on the Merge tab gives it back) or into a file, merge "
        "LoRAs into one, or extract a LoRA from two checkpoints. New LoRAs go to the LoRA folder."
    )
    with gr.Row():
        parts["pick"] = gr.Dropdown(lora_names(host.lora_folder()), label="LoRA", elem_id="alloy_lora_pick")
        parts["strength"] = gr.Number(value=1.0, label="Strength", elem_id="alloy_lora_strength")
        parts["add"] = gr.Button("Add", elem_id="alloy_lora_add")
        parts["refresh"] = gr.Button("Refresh list", elem_id="alloy_lora_refresh")
        parts["from_prompt"] = gr.Button("Get from prompt", visible=bool(prompts), elem_id="alloy_lora_from_prompt")
    parts["lines"] = gr.Textbox(lines=4, label=LINES_HELP, elem_id="alloy_lora_lines")
    with gr.Row():
        parts["check"] = gr.Button("Check LoRAs", elem_id="alloy_lora_check")
        in_place = patchable(host) is not None
        parts["bake"] = gr.Button("Bake into the loaded model", variant="primary", visible=in_place,
                                  elem_id="alloy_lora_bake")  # fmt: skip
        parts["bake_save"] = gr.Button("Bake and save", elem_id="alloy_lora_bake_save")
    with gr.Row():
        titles, selected = host.checkpoint_titles(), host.selected_checkpoint()
        parts["model"] = gr.Dropdown(titles, value=selected, visible=not in_place, label="Model to bake into",
                                     elem_id="alloy_lora_model")  # fmt: skip
        parts["save_name"] = gr.Textbox(label="Checkpoint file name (empty: automatic)", elem_id="alloy_lora_save_name")
        parts["save_dtype"] = gr.Radio(["fp16", "bf16", "fp32"], value="fp16", label="Checkpoint dtype",
                                       elem_id="alloy_lora_save_dtype")  # fmt: skip
    with gr.Accordion("Merge LoRAs into one", open=False):
        with gr.Row():
            parts["method"] = gr.Radio(["concat", "svd"], value="concat", label="Method (concat is exact)",
                                       elem_id="alloy_lora_method")  # fmt: skip
            parts["rank"] = gr.Number(value=0, precision=0, label="svd rank (0: by energy)", elem_id="alloy_lora_rank")
            parts["energy"] = gr.Slider(
                0.5, 1.0, value=0.99, step=0.005, label="svd energy", elem_id="alloy_lora_energy"
            )
            parts["clamp"] = gr.Slider(0.9, 1.0, value=1.0, step=0.001, label="svd clamp quantile (1: off)",
                                       elem_id="alloy_lora_clamp")  # fmt: skip
        with gr.Row():
            parts["merge_name"] = gr.Textbox(
                label="New LoRA file name (empty: automatic)", elem_id="alloy_lora_merge_name"
            )
            parts["merge"] = gr.Button("Merge LoRAs", elem_id="alloy_lora_merge")
    with gr.Accordion("Extract a LoRA from two checkpoints", open=False):
        with gr.Row():
            parts["extract_a"] = gr.Dropdown(titles, label="A (the fine-tune)", elem_id="alloy_lora_extract_a")
            parts["extract_b"] = gr.Dropdown(titles, label="B (its base)", elem_id="alloy_lora_extract_b")
            parts["extract_rank"] = gr.Number(value=32, precision=0, label="Rank", elem_id="alloy_lora_extract_rank")
            parts["conv_rank"] = gr.Number(value=32, precision=0, label="3×3 conv rank (0: none)",
                                           elem_id="alloy_lora_conv_rank")  # fmt: skip
            parts["full_svd"] = gr.Checkbox(label="Full SVD (slow)", value=False, elem_id="alloy_lora_full_svd")
        with gr.Row():
            parts["extract_name"] = gr.Textbox(label="New LoRA file name (empty: automatic)",
                                               elem_id="alloy_lora_extract_name")  # fmt: skip
            parts["extract"] = gr.Button("Extract", elem_id="alloy_lora_extract")
    with gr.Row():
        parts["lora_dtype"] = gr.Radio(["fp16", "bf16", "fp32"], value="fp16", label="New LoRA dtype",
                                       elem_id="alloy_lora_dtype")  # fmt: skip
        parts["overwrite"] = gr.Checkbox(
            label="Overwrite an existing file", value=False, elem_id="alloy_lora_overwrite"
        )
        parts["stop"] = gr.Button("Stop", elem_id="alloy_lora_stop")
    parts["status"] = gr.Markdown("", elem_id="alloy_lora_status")
    return parts


def split_lines(text: str) -> list[str]:
    return [line.strip() for line in (text or "").replace(",\n", "\n").splitlines() if line.strip()]


def wire(workbench: Workbench, parts: dict, prompts: list, after_bake) -> list:
    """`after_bake(outcome)` gives the values of the outputs a merge updates elsewhere (the footer). Returns the
    events that write files."""
    host = workbench.host
    status, lines = parts["status"], parts["lines"]

    def add(pick, strength, text):
        if not pick:
            return update()
        line = f"{pick}:{float(strength if strength is not None else 1):g}"
        return update(value="\n".join(split_lines(text) + [line]))

    parts["add"].click(add, [parts["pick"], parts["strength"], lines], [lines])

    def from_prompt(*texts):
        found = [line for text in texts for line in loras_in_prompt(text or "")]
        if not found:
            return update(), "No `<lora:…>` tags in the prompt."
        return update(value="\n".join(dict.fromkeys(found))), f"{len(found)} LoRA tags taken from the prompt."

    if prompts:
        parts["from_prompt"].click(from_prompt, prompts, [lines, status])

    def check(text, model):
        try:
            live = patchable(host)
            loaded = live.loaded_file() if live is not None else (host.resolve_checkpoint(model) if model else None)
            return lora_reports(split_lines(text), host.lora_folder(), loaded) or "No LoRA lines."
        except Exception as e:  # noqa: BLE001
            return error_text(e)

    parts["check"].click(check, [lines, parts["model"]], [status])
    return _wire_jobs(workbench, parts, after_bake)


def _wire_jobs(workbench: Workbench, parts: dict, after_bake) -> list:
    status, lines = parts["status"], parts["lines"]

    def job(make_call, message):
        def steps(*raw):
            try:
                call = make_call(*raw)
            except Exception as e:  # noqa: BLE001
                yield error_text(e)
                return
            for kind, value in run_in_thread(call, workbench.progress.text):
                yield message(value) if kind == "done" else value

        return steps

    def bake_call(save: bool):
        def make(text, model, name, dtype, overwrite):
            in_place = patchable(workbench.host) is not None
            chosen = None if in_place else (model or None)
            request = LoraBakeRequest(split_lines(text), model=chosen)
            if save or not in_place:
                request.save = SaveRequest(name=name or "", dtype=dtype, overwrite=bool(overwrite))
            return lambda: workbench.bake_loras(request)

        return make

    bake_inputs = [lines, parts["model"], parts["save_name"], parts["save_dtype"], parts["overwrite"]]
    writing = [button.click(job(bake_call(save), after_bake), bake_inputs, [status])
               for button, save in ((parts["bake"], False), (parts["bake_save"], True))]  # fmt: skip

    def merge_call(text, method, rank, energy, clamp, name, dtype, overwrite):
        request = LoraMergeRequest(split_lines(text), method, int(rank or 0) or None, float(energy), float(clamp),
                                   name or "", dtype, bool(overwrite))  # fmt: skip
        return lambda: workbench.merge_loras(request)

    merge_inputs = [lines, parts["method"], parts["rank"], parts["energy"], parts["clamp"], parts["merge_name"],
                    parts["lora_dtype"], parts["overwrite"]]  # fmt: skip
    writing.append(parts["merge"].click(job(merge_call, lambda outcome: outcome.message), merge_inputs, [status]))

    def extract_call(a, b, rank, conv_rank, full_svd, name, dtype, overwrite):
        if not a or not b:
            raise ParameterError("choose both checkpoints, A and B")
        conv = None if conv_rank is None else int(conv_rank)
        request = LoraExtractRequest(a, b, int(rank or 32), conv, bool(full_svd), name or "", dtype, bool(overwrite))
        return lambda: workbench.extract_lora(request)

    extract_inputs = [parts["extract_a"], parts["extract_b"], parts["extract_rank"], parts["conv_rank"],
                      parts["full_svd"], parts["extract_name"], parts["lora_dtype"], parts["overwrite"]]  # fmt: skip
    writing.append(parts["extract"].click(job(extract_call, lambda outcome: outcome.message), extract_inputs, [status]))
    parts["stop"].click(workbench.stop, [], [status])
    return writing


class LoraTab:
    key, label = "lora", "LoRA"

    def build(self, page: Page) -> None:
        prompts = prompt_boxes(page.host, page.parts["merge"])
        parts = page.parts[self.key] = build(page.workbench, prompts)
        parts["prompt_boxes"] = prompts
        page.checkpoint_lists.extend(parts[n] for n in ("model", "extract_a", "extract_b"))
        page.lora_lists.append(parts["pick"])
        page.refresh_buttons.append(parts["refresh"])

    def wire(self, page: Page) -> None:
        parts = page.parts[self.key]
        page.writing.extend(wire(page.workbench, parts, parts["prompt_boxes"], lambda outcome: outcome.message))
