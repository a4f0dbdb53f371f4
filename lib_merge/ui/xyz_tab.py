"""XYZ plot tab: three axes, options, Run/Reserve/Stop, the reservation queue and XYZ presets."""

from __future__ import annotations

import gradio as gr

from lib_merge.app.plots.desk import PlotDesk
from lib_merge.app.plots.plan import XYZPlan
from lib_merge.app.plots.presets import all_presets, delete_preset, get_preset, save_preset
from lib_merge.app.ports import GenSettings
from lib_merge.paths import XYZ_PRESETS, preset_files
from lib_merge.ui.compat import table, update
from lib_merge.ui.jobs import error_text, run_in_thread
from lib_merge.ui.merge_events import gen_settings_fn
from lib_merge.ui.plot_values import AXIS_CHOICES, NO_AXIS, dice_settings, plan_from_ui
from lib_merge.ui.tabs import Page

QUEUE_HEADERS = ["id", "created", "status", "label", "message"]


def presets_path():
    """The user's XYZ preset file (the shipped ones are read beside it)."""
    return preset_files(XYZ_PRESETS)[1]


def build(can_generate: bool) -> dict:
    parts: dict = {}
    if not can_generate:
        gr.Markdown("XYZ plots generate images: run them inside the WebUI. Plans can be checked here.")
    for name, default, values in (("x", "alpha", "0.2, 0.5, 0.8"), ("y", NO_AXIS, ""), ("z", NO_AXIS, "")):
        with gr.Row():
            parts[f"{name}_type"] = gr.Dropdown(
                AXIS_CHOICES, value=default, label=f"{name.upper()} type", elem_id=f"alloy_xyz_{name}_type", scale=1
            )
            parts[f"{name}_values"] = gr.Textbox(
                value=values, label=f"{name.upper()} values", lines=1, elem_id=f"alloy_xyz_{name}_values", scale=4
            )
    with gr.Row():
        parts["swap_xy"] = gr.Checkbox(label="Swap X/Y", value=False, elem_id="alloy_xyz_swap")
        parts["restore_after"] = gr.Checkbox(label="Restore A after the plot", value=False, elem_id="alloy_xyz_restore")
        parts["individual"] = gr.Checkbox(label="Show each image", value=False, elem_id="alloy_xyz_individual")
        parts["no_grid"] = gr.Checkbox(label="No grid", value=False, elem_id="alloy_xyz_no_grid")
        parts["save_csv"] = gr.Checkbox(label="CSV of cells", value=False, elem_id="alloy_xyz_csv")
        parts["save_models"] = gr.Checkbox(label="Save each cell's model", value=False, elem_id="alloy_xyz_save_models")
        parts["checker_gif"] = gr.Checkbox(label="Checker GIFs", value=False, elem_id="alloy_xyz_checker_gif")
    with gr.Row():
        parts["run"] = gr.Button("Run", variant="primary", elem_id="alloy_xyz_run")
        parts["reserve"] = gr.Button("Reserve", elem_id="alloy_xyz_reserve")
        parts["stop"] = gr.Button("Stop", elem_id="alloy_xyz_stop")
        parts["check"] = gr.Button("Check plan", elem_id="alloy_xyz_check")
    parts["status"] = gr.Markdown("", elem_id="alloy_xyz_status")
    parts["gallery"] = gr.Gallery(label="Grids", elem_id="alloy_xyz_gallery", columns=2)
    with gr.Accordion("Reservation queue", open=False):
        parts["queue"] = gr.Dataframe(
            headers=QUEUE_HEADERS, value=table(QUEUE_HEADERS, []), interactive=False, elem_id="alloy_xyz_queue"
        )
        with gr.Row():
            parts["queue_id"] = gr.Textbox(label="id (-1 = last, all)", value="-1", elem_id="alloy_xyz_queue_id")
            parts["start_queue"] = gr.Button("Start queue", elem_id="alloy_xyz_start_queue")
            parts["delete"] = gr.Button("Delete", elem_id="alloy_xyz_delete")
            parts["retry"] = gr.Button("Retry", elem_id="alloy_xyz_retry")
            parts["up"] = gr.Button("Up", elem_id="alloy_xyz_up")
            parts["down"] = gr.Button("Down", elem_id="alloy_xyz_down")
            parts["clear"] = gr.Button("Clear finished", elem_id="alloy_xyz_clear")
            parts["refresh_queue"] = gr.Button("Refresh", elem_id="alloy_xyz_refresh_queue")
    with gr.Accordion("XYZ presets", open=False):
        with gr.Row():
            parts["preset"] = gr.Dropdown(_preset_names(), label="Preset", elem_id="alloy_xyz_preset")
            parts["preset_name"] = gr.Textbox(label="Save as", elem_id="alloy_xyz_preset_name")
            parts["preset_overwrite"] = gr.Checkbox(label="Overwrite", value=False, elem_id="alloy_xyz_overwrite")
        with gr.Row():
            parts["preset_load"] = gr.Button("Load", elem_id="alloy_xyz_preset_load")
            parts["preset_save"] = gr.Button("Save", elem_id="alloy_xyz_preset_save")
            parts["preset_delete"] = gr.Button("Delete", elem_id="alloy_xyz_preset_delete")
        with gr.Row():
            parts["preset_import_path"] = gr.Textbox(
                label="SuperMerger xyzpresets.json", elem_id="alloy_xyz_preset_import_path", scale=4
            )
            parts["preset_import"] = gr.Button("Import", elem_id="alloy_xyz_preset_import")
    return parts


def _preset_names() -> list[str]:
    try:
        return sorted(all_presets(presets_path()))
    except Exception:  # noqa: BLE001 - a broken file shows as no presets; Load says why
        return []


AXIS_INPUTS = ("x_type", "x_values", "y_type", "y_values", "z_type", "z_values")
OPTION_INPUTS = ("swap_xy", "restore_after", "individual", "no_grid", "save_csv", "save_models", "checker_gif")


def wire(desk: PlotDesk, form, parts: dict, dice_parts: dict, gen_inputs: list, gen_settings) -> None:
    """Widgets → the plot desk. `gen_settings(raw)` → (GenSettings, notes) from `gen_inputs`' values
    (the Merge tab's Gen inputs)."""
    from lib_merge.ui.plot_values import DICE_FIELDS

    xyz_names = AXIS_INPUTS + OPTION_INPUTS
    xyz_inputs = [parts[n] for n in xyz_names]
    dice_inputs = [dice_parts[n] for n in DICE_FIELDS]
    form_inputs = form.components()
    inputs = form_inputs + xyz_inputs + dice_inputs + gen_inputs
    workbench = desk.workbench

    def split_raw(raw) -> tuple[dict, dict, dict, list]:
        raw = list(raw)
        a = len(form_inputs)
        b = a + len(xyz_inputs)
        c = b + len(dice_inputs)
        xyz = dict(zip(xyz_names, raw[a:b], strict=True))
        return form.values(raw[:a]), xyz, dict(zip(DICE_FIELDS, raw[b:c], strict=True)), raw[c:]

    def current_plan(raw, dice_run: bool = False) -> XYZPlan:
        form_values, xyz, dice, gen_raw = split_raw(raw)
        if dice_run:  # Dice's Run: N rolls as a plot with the random axis
            rolls = max(1, int(dice.get("dice_rolls") or 1))
            xyz = dict.fromkeys(xyz_names, False) | {"x_type": "random", "x_values": str(rolls)}
            xyz |= {"y_type": NO_AXIS, "z_type": NO_AXIS}
        gen, _ = gen_settings(gen_raw) if gen_inputs else (None, [])
        return plan_from_ui(form_values, xyz, dice, gen or GenSettings())

    def run(*raw, dice_run: bool = False):
        try:
            plan = current_plan(raw, dice_run)
            desk.split(plan)  # refused here, before the job starts, when any part is wrong
        except Exception as e:  # noqa: BLE001
            yield error_text(e), update(), update()
            return
        messages: list[str] = []

        def progress() -> str:
            merge = workbench.progress.text()
            if not messages:
                return merge
            return messages[-1] if merge == "idle" else f"{messages[-1]} — {merge}"

        for kind, value in run_in_thread(lambda: desk.run(plan, messages.append), progress):
            if kind != "done":  # progress text, or the error
                yield value, update(), queue_table(desk)
            else:
                options = plan.options
                output = value.output
                images = output.grids + (output.singles() if options.individual or options.no_grid else [])
                yield value.message(), images, queue_table(desk)

    outputs = [parts["status"], parts["gallery"], parts["queue"]]
    parts["run"].click(run, inputs, outputs)

    def dice_run(*raw):
        for status, gallery, queue in run(*raw, dice_run=True):
            yield status, gallery, queue, status

    dice_parts["dice_run"].click(dice_run, inputs, outputs + [dice_parts["dice_status"]])

    def stop():
        stopped = desk.stop()
        return f"Stopping the {' and the '.join(stopped)} after the current cell…" if stopped else "Nothing runs."

    parts["stop"].click(stop, [], [parts["status"]], queue=False)

    def check(*raw):
        try:
            return desk.check(current_plan(raw)).text()
        except Exception as e:  # noqa: BLE001
            return error_text(e)

    parts["check"].click(check, inputs, [parts["status"]])

    def reserve(*raw):
        try:
            ids = desk.reserve(current_plan(raw))
            return f"Reserved {len(ids)} plot(s).", queue_table(desk)
        except Exception as e:  # noqa: BLE001
            return error_text(e), update()

    parts["reserve"].click(reserve, inputs, [parts["status"], parts["queue"]])

    _wire_dice(desk, dice_parts, inputs, split_raw)
    _wire_queue(desk, parts)
    _wire_presets(desk, parts)


def _wire_dice(desk: PlotDesk, dice_parts: dict, inputs: list, split_raw) -> None:
    """Dice's Roll (a preview of one roll) and Save E-list; its Run is a plot, wired with Run."""

    def dice_preview(*raw):
        try:
            form_values, _, dice, _ = split_raw(raw)
            plan = plan_from_ui(form_values, {"x_type": "seed", "x_values": "1"}, dice, GenSettings())
            result = desk.roll_dice(plan, dice_settings(dice))
        except Exception as e:  # noqa: BLE001
            return error_text(e), update()
        lines = [f"seed: {result.seed}"]
        if result.alpha is not None:
            lines.append("alpha: " + result.blocks_text(result.alpha))
        if result.beta is not None:
            lines.append("beta: " + result.blocks_text(result.beta))
        if result.elemental:
            lines.append("elemental: " + ", ".join(result.elemental))
        return f"Rolled with seed {result.seed}.", "\n".join(lines)

    dice_parts["dice_roll"].click(dice_preview, inputs, [dice_parts["dice_status"], dice_parts["dice_vectors"]])

    def save_elist():
        try:
            return f"Saved E-list {desk.save_elist()}."
        except Exception as e:  # noqa: BLE001
            return error_text(e)

    dice_parts["dice_elist"].click(save_elist, [], [dice_parts["dice_status"]])


def _wire_queue(desk: PlotDesk, parts: dict) -> None:
    """The reservation queue's buttons: start, and the row edits by id."""

    def start_queue():
        text = "Queue started in the background." if desk.start_queue() else "The queue is already running."
        return text, queue_table(desk)

    parts["start_queue"].click(start_queue, [], [parts["status"], parts["queue"]])

    queue = desk.queue

    def edit(action):
        def call(ident):
            try:
                text = action(ident)
            except Exception as e:  # noqa: BLE001
                return error_text(e), queue_table(desk)
            return text, queue_table(desk)

        return call

    edits = {
        "delete": lambda i: f"Deleted {queue.delete(i)} row(s).",
        "retry": lambda i: (queue.retry(i), "Queued again.")[1],
        "up": lambda i: (queue.move(i, -1), "Moved up.")[1],
        "down": lambda i: (queue.move(i, 1), "Moved down.")[1],
        "clear": lambda i: f"Cleared {queue.clear_finished()} finished row(s).",
        "refresh_queue": lambda i: "Queue" + (" (running)." if queue.running() else "."),
    }
    for name, action in edits.items():
        parts[name].click(edit(action), [parts["queue_id"]], [parts["status"], parts["queue"]])


def queue_table(desk: PlotDesk) -> dict:
    return table(QUEUE_HEADERS, [[r.id, r.created, r.status, r.label, r.message] for r in desk.rows()])


def _wire_presets(desk: PlotDesk, parts: dict) -> None:
    axis_outputs = [parts[n] for n in AXIS_INPUTS]

    def load(name):
        try:
            axes = get_preset(presets_path(), name)
        except Exception as e:  # noqa: BLE001
            return [update() for _ in axis_outputs] + [error_text(e)]
        values = []
        for axis in ("x", "y", "z"):
            spec = axes.get(axis) or {}
            values += [update(value=spec.get("type", NO_AXIS)), update(value=spec.get("values", ""))]
        return values + [f"Loaded preset {name!r}."]

    parts["preset_load"].click(load, [parts["preset"]], axis_outputs + [parts["status"]])

    def save(name, overwrite, *axes):
        try:
            data = {
                axis: {"type": axes[2 * i], "values": axes[2 * i + 1]}
                for i, axis in enumerate(("x", "y", "z"))
                if axes[2 * i] and axes[2 * i] != NO_AXIS
            }
            save_preset(presets_path(), name or "", data, bool(overwrite))
        except Exception as e:  # noqa: BLE001
            return error_text(e), update()
        return f"Saved preset {name!r}.", update(choices=_preset_names(), value=name)

    parts["preset_save"].click(
        save, [parts["preset_name"], parts["preset_overwrite"]] + axis_outputs, [parts["status"], parts["preset"]]
    )

    def delete(name):
        try:
            delete_preset(presets_path(), name or "")
        except Exception as e:  # noqa: BLE001
            return error_text(e), update()
        return f"Deleted preset {name!r}.", update(choices=_preset_names(), value=None)

    parts["preset_delete"].click(delete, [parts["preset"]], [parts["status"], parts["preset"]])

    def import_presets(path):
        from lib_merge.app.plots.presets import SUPERMERGER_PRESETS, import_supermerger_presets
        from lib_merge.paths import file_in_folders

        try:
            source = file_in_folders(path, desk.workbench.import_folders(), SUPERMERGER_PRESETS)
            names = import_supermerger_presets(source, presets_path())
        except Exception as e:  # noqa: BLE001
            return error_text(e), update()
        return f"Imported {len(names)} preset(s): {', '.join(names)}.", update(choices=_preset_names())

    parts["preset_import"].click(import_presets, [parts["preset_import_path"]], [parts["status"], parts["preset"]])


class XyzTab:
    key, label = "xyz", "XYZ plot"

    def build(self, page: Page) -> None:
        page.parts[self.key] = build(page.host.generation is not None)

    def wire(self, page: Page) -> None:
        gen = page.parts["merge"]["gen_inputs"]
        dice = page.parts["dice"]
        wire(page.desk, page.form, page.parts[self.key], dice, gen["inputs"], gen_settings_fn(page.host, gen))
