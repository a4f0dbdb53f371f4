"""Optimize tab: a study over a recipe template's open inputs (the space as a table), its sampler, scorer,
seeds and prompts; Start, Stop (after the current trial), Resume; the live chart, the parameters'
importance, the best trials' images, Apply best and Save best."""

from __future__ import annotations

import os
import time

import gradio as gr

from lib_merge.app.optimize.builtin import BUILTIN_SCORERS
from lib_merge.app.optimize.plugins import PLUGIN_PREFIX, plugin_folder
from lib_merge.app.optimize.request import study_folder
from lib_merge.app.optimize.samplers import SAMPLERS
from lib_merge.app.optimize.scorers import HUMAN
from lib_merge.app.optimize.view import (
    IMPORTANCE_COLUMNS,
    TRIAL_COLUMNS,
    best_images,
    importance_rows,
    progress_text,
    score_chart,
    trial_rows,
)
from lib_merge.app.requests import SaveRequest
from lib_merge.ui.compat import dataframe_rows, table, update
from lib_merge.ui.jobs import error_text
from lib_merge.ui.optimize_values import (
    SPACE_COLUMNS,
    rows_from_template,
    study_request,
    template_from_settings,
)
from lib_merge.ui.tabs import Page
from lib_merge.ui.values import merge_request

CHOICES = {"left": "Left is better (←)", "right": "Right is better (→)", "tie": "Tie (↓)", "skip": "Skip (s)"}
FIELDS = ("study", "storage", "recipe", "space", "sampler", "trials", "seed", "scorer", "prompts",
          "negative_prompt", "seeds", "holdout_seeds", "steps", "width", "height", "sampler_name", "cfg_scale",
          "restore_after")  # fmt: skip


def scorer_choices() -> list[str]:
    folder = plugin_folder()
    plugins = sorted(p.stem for p in folder.glob("*.py")) if folder.is_dir() else []
    return [*BUILTIN_SCORERS, HUMAN, *(PLUGIN_PREFIX + name for name in plugins)]


def build(can_generate: bool) -> dict:
    c: dict = {}
    if not can_generate:
        gr.Markdown("Optimize generates images for every trial: it runs in the WebUI (AUTOMATIC1111 or Forge).")
    with gr.Row():
        c["study"] = gr.Textbox(label="Study name (starting it again resumes it)", value="study-1",
                                elem_id="alloy_opt_study", scale=2)  # fmt: skip
        c["storage"] = gr.Textbox(label="Storage URL (empty: user-data/optimize/studies.db)",
                                  elem_id="alloy_opt_storage", scale=2)  # fmt: skip
    c["recipe"] = gr.Textbox(
        label='Recipe template: each param("name") is searched', lines=6, elem_id="alloy_opt_recipe"
    )
    with gr.Row():
        c["open"] = gr.Textbox(label="Inputs of the Merge tab's merge to open (e.g. alpha, beta)", value="alpha",
                               elem_id="alloy_opt_open", scale=3)  # fmt: skip
        c["from_merge"] = gr.Button("Template from the Merge tab", elem_id="alloy_opt_from_merge")
        c["fill_space"] = gr.Button("Space rows from the template", elem_id="alloy_opt_fill_space")
    space_label = "Search space (blocks: 'knots 5' or groups 'IN00 IN01 | M00'; choices: comma-separated)"
    c["space"] = gr.Dataframe(headers=SPACE_COLUMNS, datatype=["str"] * len(SPACE_COLUMNS), row_count=(1, "dynamic"),
                              col_count=(len(SPACE_COLUMNS), "fixed"), label=space_label,
                              elem_id="alloy_opt_space")  # fmt: skip
    with gr.Row():
        c["sampler"] = gr.Dropdown(list(SAMPLERS), value="tpe", label="Sampler", elem_id="alloy_opt_sampler")
        c["trials"] = gr.Number(value=20, precision=0, label="Trials", elem_id="alloy_opt_trials")
        c["seed"] = gr.Number(value=0, precision=0, label="Sampler seed", elem_id="alloy_opt_seed")
        c["scorer"] = gr.Dropdown(scorer_choices(), value=["aesthetic"], multiselect=True,
                                  label="Scorers (several: a Pareto front)", elem_id="alloy_opt_scorer")  # fmt: skip
    with gr.Row():
        c["prompts"] = gr.Textbox(label="Prompts, one per line (empty: the txt2img prompt)", lines=2,
                                  elem_id="alloy_opt_prompts", scale=3)  # fmt: skip
        c["negative_prompt"] = gr.Textbox(label="Negative prompt", lines=2, elem_id="alloy_opt_negative", scale=2)
    with gr.Row():
        c["seeds"] = gr.Textbox(value="1, 2", label="Seeds", elem_id="alloy_opt_seeds")
        c["holdout_seeds"] = gr.Textbox(value="101, 102, 103", label="Held-out seeds (the report)",
                                        elem_id="alloy_opt_holdout")  # fmt: skip
        c["steps"] = gr.Number(value=0, precision=0, label="Steps (0: txt2img)", elem_id="alloy_opt_steps")
        c["width"] = gr.Number(value=0, precision=0, label="Width", elem_id="alloy_opt_width")
        c["height"] = gr.Number(value=0, precision=0, label="Height", elem_id="alloy_opt_height")
        c["sampler_name"] = gr.Textbox(label="Sampler (empty: txt2img)", elem_id="alloy_opt_sampler_name")
        c["cfg_scale"] = gr.Number(value=0, label="CFG (0: txt2img)", elem_id="alloy_opt_cfg")
    c["restore_after"] = gr.Checkbox(value=True, label="Model A again after the study", elem_id="alloy_opt_restore")
    with gr.Row():
        c["start"] = gr.Button("Start", variant="primary", elem_id="alloy_opt_start", visible=can_generate)
        c["resume"] = gr.Button("Resume", elem_id="alloy_opt_resume", visible=can_generate)
        c["stop"] = gr.Button("Stop after this trial", elem_id="alloy_opt_stop")
        c["refresh"] = gr.Button("Refresh", elem_id="alloy_opt_refresh")
        c["apply"] = gr.Button("Apply best", elem_id="alloy_opt_apply", visible=can_generate)
        c["save_name"] = gr.Textbox(label="Save best as (empty: automatic)", elem_id="alloy_opt_save_name")
        c["save"] = gr.Button("Save best", elem_id="alloy_opt_save", visible=can_generate)
    c["status"] = gr.Markdown("No study yet.", elem_id="alloy_opt_status")
    with gr.Accordion('Your choice (scorer "human"): which merge is better?', open=True):
        c["pair_info"] = gr.Markdown("No pair to judge.", elem_id="alloy_opt_pair_info")
        with gr.Row():
            c["pair_left"] = gr.Gallery(label="Left (key ←)", columns=2, elem_id="alloy_opt_pair_left")
            c["pair_right"] = gr.Gallery(label="Right (key →)", columns=2, elem_id="alloy_opt_pair_right")
        with gr.Row():
            for winner, label in CHOICES.items():
                c[f"choose_{winner}"] = gr.Button(label, elem_id=f"alloy_opt_choose_{winner}")
        c["pair_id"] = gr.State("")
    with gr.Row():
        c["chart"] = gr.Image(label="Score per trial, best so far", type="filepath", elem_id="alloy_opt_chart")
        c["importance"] = gr.Dataframe(headers=IMPORTANCE_COLUMNS, label="Parameter importance",
                                       elem_id="alloy_opt_importance")  # fmt: skip
    c["gallery"] = gr.Gallery(label="Best trials", columns=4, elem_id="alloy_opt_gallery")
    c["trials_table"] = gr.Dataframe(headers=TRIAL_COLUMNS, label="Trials", elem_id="alloy_opt_trials_table")
    return c


def wire(page: Page, c: dict) -> None:
    studies, workbench = page.studies, page.workbench
    inputs = [c[name] for name in FIELDS]
    shown = [c["status"], c["chart"], c["importance"], c["gallery"], c["trials_table"]]
    pair_shown = [c["pair_info"], c["pair_left"], c["pair_right"], c["pair_id"]]

    def pair_view(name: str, shown_id: str | None = None) -> list:
        """The pair to judge, blind (no parameters shown); unchanged parts are left alone (no flicker)."""
        try:
            pair = studies.pair(name, files=True)
        except Exception as e:  # noqa: BLE001 - not a study scored by "human", or not run here
            return [f"No pair to judge: {error_text(e)}", [], [], ""]
        if pair.get("pair_id") is None:
            return [f"No pair to judge: {pair['reason']}.", [], [], ""]
        if pair["pair_id"] == shown_id:
            return [update(), update(), update(), shown_id]
        open_pairs = f" ({pair['pending']} open)" if pair["pending"] > 1 else ""
        info = f"Which merge is better{open_pairs}? The same seeds and prompts on both sides."
        return [info, pair["left"]["images"], pair["right"]["images"], pair["pair_id"]]

    def view(name: str) -> list:
        try:
            status = studies.status(name)
        except Exception as e:  # noqa: BLE001 - no study of that name yet: say so
            return [error_text(e), update(), update(), update(), update()]
        folder = os.path.join(study_folder(), status["study"])
        chart = score_chart(status, os.path.join(folder, "chart.png"))
        importance = table(IMPORTANCE_COLUMNS, importance_rows(studies.load(name)))
        trials = table(TRIAL_COLUMNS, trial_rows(status))
        return [
            progress_text(status),
            chart,
            importance,
            best_images(status, folder),
            trials,
        ]

    def start(*raw):
        values = dict(zip(FIELDS, raw, strict=True))
        values["space"] = dataframe_rows(values["space"])  # a pandas frame on Gradio 3.41 and 4
        try:
            run = studies.start(study_request(values), wait=False)
        except Exception as e:  # noqa: BLE001
            yield [error_text(e), update(), update(), update(), update(), update(), update(), update(), ""]
            return
        shown_id = None
        while run.state == "running":
            pair = pair_view(run.plan.name, shown_id)
            shown_id = pair[-1]
            yield view(run.plan.name) + pair
            time.sleep(1.0)
        yield view(run.plan.name) + pair_view(run.plan.name)

    c["start"].click(start, inputs, shown + pair_shown)
    c["resume"].click(start, inputs, shown + pair_shown)
    c["refresh"].click(lambda name: view(name) + pair_view(name), [c["study"]], shown + pair_shown)

    def chooser(winner: str):
        def choose(name: str, pair_id: str) -> list:
            if not pair_id:
                return pair_view(name)
            try:
                studies.choose(name, pair_id, winner)
            except Exception as e:  # noqa: BLE001 - answered already (another tab), or the study is gone
                return [error_text(e), update(), update(), pair_id]
            return pair_view(name)

        return choose

    for winner in CHOICES:  # outside the queue: the running study's own event holds it
        c[f"choose_{winner}"].click(chooser(winner), [c["study"], c["pair_id"]], pair_shown, queue=False)
    c["stop"].click(lambda name: _guarded(lambda: _stopped(studies.stop(name))), [c["study"]], [c["status"]],
                    queue=False)  # fmt: skip

    def apply(name):
        return _guarded(lambda: studies.apply(name).message)

    def save(name, file_name):
        def work() -> str:
            studies.apply(name)
            return f"Saved {workbench.save_current(SaveRequest(name=file_name or ''))}."

        return _guarded(work)

    page.writing.append(c["save"].click(save, [c["study"], c["save_name"]], [c["status"]]))
    c["apply"].click(apply, [c["study"]], [c["status"]])

    def from_merge(open_text, *raw):
        try:
            request = merge_request(page.form.values(raw))
            names = [n.strip() for n in (open_text or "").split(",") if n.strip()]
            return template_from_settings(request.settings, names), update()
        except Exception as e:  # noqa: BLE001
            return update(), error_text(e)

    c["from_merge"].click(from_merge, [c["open"], *page.form.components()], [c["recipe"], c["status"]])

    def fill_space(text, rows):
        try:
            return rows_from_template(text, dataframe_rows(rows)), update()
        except Exception as e:  # noqa: BLE001
            return update(), error_text(e)

    c["fill_space"].click(fill_space, [c["recipe"], c["space"]], [c["space"], c["status"]])


def _stopped(answer: dict) -> str:
    if answer["stopping"]:
        return f"Stopping {answer['study']} after the current trial."
    return f"{answer['study']} is not running ({answer['state']})."


def _guarded(work) -> str:
    try:
        return work()
    except Exception as e:  # noqa: BLE001
        return error_text(e)


class OptimizeTab:
    key, label = "optimize", "Optimize"

    def build(self, page: Page) -> None:
        page.parts[self.key] = build(page.host.generation is not None)

    def wire(self, page: Page) -> None:
        wire(page, page.parts[self.key])
