"""The Toolkit and Analysis tabs' work: requests on the host's checkpoints, answered as text and files.

Outputs go to the host's save folder (the checkpoint folder), named after the input unless a name is
given; nothing already there is replaced without "overwrite", and inputs never.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from lib_merge.analysis.report import block_rows, write_chart, write_csv, write_heatmap
from lib_merge.analysis.similarity import Similarity, compare
from lib_merge.app.naming import custom_file_name, sanitize
from lib_merge.app.ports import Host, patchable
from lib_merge.arch.blocks import SCHEMAS, schema_for
from lib_merge.errors import ParameterError, RecipeError, UnsafePathError
from lib_merge.io.source import SourceModel
from lib_merge.io.tempfiles import write_text
from lib_merge.paths import inside_folder, user_data_dir
from lib_merge.toolkit.autoprune import Destinations, autoprune
from lib_merge.toolkit.components import extract_component, replace_component
from lib_merge.toolkit.fingerprint import fingerprint
from lib_merge.toolkit.inspect import format_full_report, full_report
from lib_merge.toolkit.prune import RewriteOptions, prune_file, rewrite_dtype

Step = Callable[[int, int], None]
ACTIONS = ("inspect", "fingerprint", "prune", "convert", "extract", "replace")


@dataclass
class ToolkitRequest:
    action: str  # one of ACTIONS
    model: str  # a checkpoint title (or a file the host resolves)
    dtype: str = "fp16"  # prune/convert: fp16, bf16, fp32, keep
    keep_ema: bool = False
    fix_position_ids: bool = True
    clamp: bool = False
    component: str = "vae"  # extract/replace
    donor: str = ""  # replace: the checkpoint the component comes from
    name: str = ""  # output file name; empty: derived from the input
    overwrite: bool = False


def run_toolkit(request: ToolkitRequest, host: Host, step: Step | None = None) -> str:
    """The action's report, or what it wrote, as Markdown-safe text."""
    if request.action not in ACTIONS:
        raise ParameterError(f"unknown Toolkit action {request.action!r}: choose {', '.join(ACTIONS)}")
    path = host.resolve_checkpoint(request.model)
    if request.action == "inspect":
        return format_full_report(full_report(path))
    if request.action == "fingerprint":
        return "\n".join(fingerprint(path, step).lines())
    stem = os.path.splitext(os.path.basename(path))[0]
    if request.action in ("prune", "convert"):
        options = RewriteOptions(
            dtype=rewrite_dtype(request.dtype),
            prune=request.action == "prune",
            keep_ema=request.keep_ema,
            fix_position_ids=request.fix_position_ids,
            clamp=request.clamp,
            overwrite=request.overwrite,
        )
        target = _output(host, request.name, f"{stem}-{'pruned' if options.prune else request.dtype}")
        report = prune_file(path, target, options, step)
        return "\n".join([f"Wrote {report.written.path}"] + report.lines())
    if request.action == "extract":
        folder = host.vae_folder() if request.component == "vae" else host.save_folder()
        target = _output(host, request.name, f"{stem}.{request.component}", folder)
        written = extract_component(path, request.component, target, request.overwrite, step)
        return f"Wrote {written.path}: {written.keys} keys of the {request.component}"
    if not request.donor:
        raise ParameterError("choose the checkpoint to take the component from")
    donor = host.resolve_checkpoint(request.donor)
    donor_stem = os.path.splitext(os.path.basename(donor))[0]
    target = _output(host, request.name, f"{stem}-{request.component}-from-{donor_stem}")
    written = replace_component(path, request.component, donor, target, request.overwrite, step)
    return f"Wrote {written.path}: the {request.component} of {os.path.basename(donor)}, all else unchanged"


def _output(host: Host, name: str, fallback: str, folder: str | None = None) -> str:
    """A file in `folder` (default: the save folder) named by the user, or after the input."""
    folder = folder or host.save_folder()
    os.makedirs(folder, exist_ok=True)
    return os.path.join(folder, custom_file_name(name if name.strip() else sanitize(fallback)))


def run_autoprune(folder: str, host: Host) -> str:
    """Autoprune a folder (default: Autoprune/ in the models folder) into the host's model folders
    (checkpoints, VAE, components beside them); only folders inside the models folder are taken."""
    save = host.save_folder()
    models = os.path.dirname(save) if os.path.basename(save) == "Stable-diffusion" else save
    folder = os.path.join(models, folder.strip() or "Autoprune")  # relative to the models folder
    if not os.path.isdir(folder):
        raise ParameterError(f"no such folder: {folder}")
    if not inside_folder(folder, models):
        raise UnsafePathError(f"autoprune works on folders inside {models}, not {folder}")
    results = autoprune(folder, Destinations.under(models))
    if not results:
        return f"No checkpoint files in {folder}."
    return "\n".join(r.message for r in results)


@dataclass
class Analysis:
    result: Similarity
    csv_path: str
    heatmap_path: str
    chart_path: str


def analyze(a: str, b: str, attention: bool, host: Host, step: Step | None = None) -> Analysis:
    """Two checkpoints compared; the CSV, the heatmap and the bar chart saved under <user-data>/analysis/,
    drawn in the host's font like its XYZ grids."""
    result = compare(host.resolve_checkpoint(a), host.resolve_checkpoint(b), attention, step)
    folder = Path(user_data_dir()) / "analysis"
    folder.mkdir(parents=True, exist_ok=True)
    stem = sanitize(f"{os.path.splitext(result.a)[0]}_vs_{os.path.splitext(result.b)[0]}") or "analysis"
    csv_path = write_csv(result, str(folder / f"{stem}.csv"))
    heatmap_path = write_heatmap(result, str(folder / f"{stem}.png"), font_path=host.font_path())
    chart_path = write_chart(result, str(folder / f"{stem}-chart.png"), font_path=host.font_path())
    return Analysis(result, csv_path, heatmap_path, chart_path)


BLOCK_COLUMNS = ["block", "keys", "cosine_mean", "cosine_min", "cosine_weighted", "attention"]


def analysis_json(analysis: Analysis) -> dict:
    """An analysis as the HTTP API answers it: the per-block table and the files saved."""
    result = analysis.result
    return {
        "a": result.a,
        "b": result.b,
        "architecture": result.architecture,
        "blocks": [dict(zip(BLOCK_COLUMNS, row, strict=True)) for row in block_rows(result)],
        "files": {"csv": analysis.csv_path, "heatmap": analysis.heatmap_path, "chart": analysis.chart_path},
    }


ELEMENT_COLUMNS = ["key", "slot", "fine slot", "shape", "dtype", "bytes", "component"]


def elements(model: str, host: Host, needle: str = "") -> list[list]:
    """Every key of a model with its block, shape, dtype, size and component; `needle` filters by a
    substring of the key or the slot name."""
    source = SourceModel(host.resolve_checkpoint(model))
    try:
        arch = source.arch.arch
        schema = schema_for(source.arch.id)
        fine = SCHEMAS[schema.fine] if schema is not None and schema.fine else None
        rows = []
        for key in source.keys:
            info = source.info(key)
            slot = (schema.slot_of(key) if schema else None) or ""
            fine_slot = (fine.slot_of(key) if fine else None) or ""
            component = (arch.component_of(key) if arch else None) or ""
            row = [key, slot, fine_slot, "x".join(map(str, info.shape)), str(info.dtype).removeprefix("torch."),
                   info.nbytes, component]  # fmt: skip
            if not needle or needle.lower() in key.lower() or needle.upper() in (slot, fine_slot):
                rows.append(row)
        return rows
    finally:
        source.close()


def table_csv(columns: list[str], rows: list[list], name: str) -> str:
    """A table saved as <user-data>/analysis/<name>.csv (for download)."""
    import csv
    import io

    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(columns)
    writer.writerows(rows)
    folder = Path(user_data_dir()) / "analysis"
    folder.mkdir(parents=True, exist_ok=True)
    return write_text(str(folder / f"{sanitize(name) or 'table'}.csv"), out.getvalue())


LORA_ELEMENT_COLUMNS = ["module", "type", "rank", "alpha", "target key", "slot"]


def lora_elements(name: str, host: Host, needle: str = "") -> list[list]:
    """The modules of a LoRA of the LoRA folder: type, rank, alpha, the checkpoint key it changes (in the
    loaded model, else in its base's reference layout) and that key's block."""
    from lib_merge.app.lora import find_lora
    from lib_merge.lora.file import LoraFile, base_shapes, match

    lora = LoraFile.read(find_lora(name, host.lora_folder()))
    base = lora.likely_base() or "sd1"
    shapes = base_shapes(base)
    live = patchable(host)
    loaded = live.loaded_file() if live is not None else None
    if loaded and os.path.isfile(loaded):
        source = SourceModel(loaded)
        try:
            if source.arch.id == base:
                shapes = source.shapes
        finally:
            source.close()
    targets = match(lora, shapes, "the checkpoint", strict=False).targets
    schema = schema_for(base)
    rows = []
    for module_name, module in lora.modules.items():
        target = targets.get(module_name)
        key = "" if target is None else target.key + (f" rows {target.rows[0]}:{target.rows[1]}" if target.rows else "")
        slot = (schema.slot_of(target.key) if schema and target else None) or ""
        kind = module.kind + ("+dora" if module.dora else "")
        alpha = "" if module.alpha is None else f"{module.alpha:g}"
        row = [module_name, kind, module.rank or "", alpha, key or "not found", slot]
        if not needle or needle.lower() in module_name.lower() or needle.upper() == slot:
            rows.append(row)
    return rows


@dataclass
class MetadataView:
    text: str  # the metadata as JSON, JSON-in-string values decoded
    recipe: str  # the alloy_recipe, or ""
    recipe_hash: str  # alloy_recipe_hash as written, or ""


def metadata_view(model: str, host: Host) -> MetadataView:
    source = SourceModel(host.resolve_checkpoint(model))
    try:
        metadata = dict(source.metadata)
    finally:
        source.close()
    decoded = {k: _decoded(v) for k, v in sorted(metadata.items())}
    return MetadataView(json.dumps(decoded, indent=1, ensure_ascii=False), metadata.get("alloy_recipe", ""),
                        metadata.get("alloy_recipe_hash", ""))  # fmt: skip


def _decoded(value: str):
    if value[:1] in "{[":
        try:
            return json.loads(value)
        except ValueError:
            return value
    return value


def verify_recipe_hash(recipe: str, expected: str) -> str:
    """Whether the recipe text hashes to the hash written beside it (no model file is read)."""
    from lib_merge.recipe import parse_recipe
    from lib_merge.recipe.printer import recipe_hash

    if not recipe.strip():
        raise ParameterError("this file carries no Alloy recipe")
    try:
        digest = recipe_hash(parse_recipe(recipe))
    except ValueError as e:  # a model without its sha256
        raise RecipeError(str(e)) from None
    if digest == expected:
        return f"The recipe's hash is {digest}, as written in the file."
    return f"The recipe hashes to {digest}, but the file says {expected or 'nothing'}: it was edited or is damaged."
