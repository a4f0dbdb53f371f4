"""Baking LoRAs: "name:strength[:blocks]" lines → lora(…) nodes over a base recipe.

The CLI's `lora bake`, the HTTP route and the LoRA tab all build their recipe here; the merge itself is
an ordinary merge (live or to a file, logged, restorable).
"""

from __future__ import annotations

import math
import os
import re
from collections.abc import Callable

import torch

from lib_merge.app.naming import custom_file_name, sanitize
from lib_merge.app.requests import LoraExtractRequest, LoraMergeRequest
from lib_merge.errors import ModelNotFoundError, ParameterError
from lib_merge.io.device import check_device
from lib_merge.io.dtypes import is_fp8, parse_output_dtype
from lib_merge.lora.blocks import lora_block_vector
from lib_merge.lora.extract import ExtractSettings
from lib_merge.lora.factor import Factoring, RankRule
from lib_merge.lora.merge import LoraInput, LoraMergeSettings
from lib_merge.lora.write import LoraBuild, WrittenLora, write_lora
from lib_merge.methods.lora import LoraRef
from lib_merge.paths import inside_folder
from lib_merge.recipe.nodes import BlocksSpec, MergeNode, Node

_NUMBER = re.compile(r"^[-+]?(\d+\.?\d*|\.\d+)([eE][-+]?\d+)?$")
_PROMPT_TAG = re.compile(r"<lora:([^:>]+)(?::([^:>]*))?(?::([^>]*))?>")


def parse_lora_spec(text: str) -> tuple[str, float, str | None]:
    """ "NAME:STRENGTH[:BLOCKS]" → (name, strength, blocks); a bare NAME has strength 1. Colons inside a
    path (C:\\…) stay in it: only a number after the last (or second-last) colon is a strength."""
    text = text.strip()
    if not text:
        raise ParameterError("an empty LoRA line: give NAME[:STRENGTH[:BLOCKS]]")
    parts = text.rsplit(":", 2)
    if len(parts) == 3 and _NUMBER.match(parts[1]) and parts[0]:
        return parts[0], _strength(parts[1], text), parts[2] or None
    parts = text.rsplit(":", 1)
    if len(parts) == 2 and _NUMBER.match(parts[1]) and parts[0]:
        return parts[0], _strength(parts[1], text), None
    return text, 1.0, None


def _strength(number: str, line: str) -> float:
    value = float(number)
    if not math.isfinite(value):
        raise ParameterError(f"LoRA line {line!r}: the strength {number} is not a finite number")
    return value


def loras_in_prompt(prompt: str) -> list[str]:
    """The `<lora:name:strength>` tags of a txt2img prompt as LoRA lines (`lbw=` block arguments kept)."""
    lines = []
    for name, strength, rest in _PROMPT_TAG.findall(prompt or ""):
        line = f"{name}:{strength or '1'}"
        blocks = next((part[4:] for part in (rest or "").split(":") if part.startswith("lbw=")), "")
        lines.append(line + (f":{blocks}" if blocks else ""))
    return lines


def lora_recipe(
    base: Node,
    lines: list[str],
    resolve: Callable[[str], str],
    schema_id: str | None,
    presets: dict[str, tuple[float, ...]] | None = None,
) -> Node:
    """lora(…lora(base, F1, s1)…, Fn, sn): each line's file found by `resolve`, its block weights (a LoRA
    preset or a 17/26-value SD1, 12/20-value SDXL vector) times its strength."""
    if not lines:
        raise ParameterError("no LoRA to bake: give one NAME:STRENGTH line at least")
    root = base
    for line in lines:
        name, strength, blocks = parse_lora_spec(line)
        value: object = strength
        if blocks:
            if schema_id is None:
                raise ParameterError("LoRA block weights need a model with blocks (SD1, SD2, SDXL, Flux)")
            value = BlocksSpec([strength * v for v in lora_block_vector(blocks, schema_id, presets)])
        root = MergeNode("lora", (root,), {"file": LoraRef(resolve(name)), "strength": value})
    return root


LORA_EXTENSIONS = (".safetensors", ".pt", ".ckpt")


def find_lora(name: str, folder: str) -> str:
    """A LoRA named as the WebUI names it (file name with or without extension, or a path below the
    folder) → its file; only files inside `folder` (links followed) are found."""
    wanted = name.strip()
    candidates = [wanted] + [wanted + ext for ext in LORA_EXTENSIONS]
    for candidate in candidates:
        path = os.path.join(folder, candidate)
        if os.path.isfile(path) and inside_folder(path, folder):
            return os.path.abspath(path)
    stem = os.path.basename(wanted)
    for root, dirs, files in os.walk(folder):
        dirs.sort()
        for file in sorted(files):
            base, ext = os.path.splitext(file)
            if ext.lower() in LORA_EXTENSIONS and stem in (file, base):
                path = os.path.join(root, file)
                if inside_folder(path, folder):
                    return os.path.abspath(path)
    raise ModelNotFoundError(f"LoRA {name!r} not found in {folder}")


def confine_loras(node: Node, folder: str) -> Node:
    """The recipe with every LoRA file looked up inside `folder` only (a recipe from a user or a request
    names no file elsewhere on the disk; a bound LoRA of a live merge is looked up again)."""
    if not isinstance(node, MergeNode):
        return node
    params = dict(node.params)
    for name, value in node.params.items():
        ref = getattr(value, "ref", value)  # a BoundLora carries its LoraRef
        if isinstance(ref, LoraRef):
            params[name] = LoraRef(find_lora(ref.path, folder), ref.sha256)
    return MergeNode(node.method, tuple(confine_loras(i, folder) for i in node.inputs), params)


def merge_settings(
    request: LoraMergeRequest,
    find: Callable[[str], str],
    model: str | None,
    presets: dict[str, tuple[float, ...]] | None = None,
    model_if_same_base: bool = True,
) -> LoraMergeSettings:
    """The request's lines as inputs (each file found by `find`); `model` gives the layout, and with
    `model_if_same_base` (the WebUI's loaded checkpoint) only when the LoRAs are made for its architecture.
    The CLI, the HTTP route and the LoRA tab all merge with these settings."""
    if not request.loras:
        raise ParameterError("no LoRA to merge: give one NAME:STRENGTH line at least")
    inputs = []
    for line in request.loras:
        name, strength, blocks = parse_lora_spec(line)
        inputs.append(LoraInput(find(name), strength, blocks))
    if request.rank:
        rule = RankRule(rank=request.rank, max_rank=request.max_rank)
    else:
        rule = RankRule(energy=request.energy, max_rank=request.max_rank)
    factoring = Factoring(full_svd=request.full_svd, seed=request.seed, clamp=request.clamp)
    return LoraMergeSettings(inputs, request.method, rule, factoring, model, presets, model_if_same_base)


def extract_settings(
    request: LoraExtractRequest, resolve: Callable[[str], str], device: str = "cpu"
) -> ExtractSettings:
    """ΔW = alpha·A − beta·B factorised at the request's rank (or energy, or ratio) on `device` (the CLI's
    --device, the host's setting): every surface's extraction. A device this machine lacks is refused here."""
    check_device(device)
    by_share = request.energy is not None or request.ratio is not None
    rule = RankRule(None if by_share else request.rank, request.energy, request.ratio, request.max_rank)
    conv = None if not request.conv_rank else RankRule(rank=request.conv_rank, max_rank=request.max_rank)
    return ExtractSettings(
        resolve(request.a),
        resolve(request.b),
        alpha=request.alpha,
        beta=request.beta,
        rule=rule,
        conv_rule=conv,
        skip_convs=request.conv_rank == 0,
        factoring=Factoring(full_svd=request.full_svd, seed=request.seed, clamp=request.clamp),
        te_threshold=request.te_threshold,
        output_alpha=request.network_alpha,
        device=device,
    )


def write_new_lora(build: LoraBuild, target: str, dtype: str, overwrite: bool) -> WrittenLora:
    """A merged or extracted LoRA written to `target`; one with no change at all is refused."""
    if not build.modules:
        raise ParameterError("nothing to write: every module's change is zero")
    return write_lora(build, target, parse_lora_dtype(dtype), overwrite)


def parse_lora_dtype(name: str) -> torch.dtype:
    """A new LoRA's dtype: fp16, bf16 or fp32. fp8 is refused: a LoRA is small, and its factors, whose
    product is the change, would lose most of their precision for a few MB."""
    dtype = parse_output_dtype(name)
    if is_fp8(dtype):
        raise ParameterError(f"a LoRA is not written as {name}; use fp16, bf16 or fp32")
    return dtype


def lora_output_name(name: str, fallback: str) -> str:
    """The user's plain file name (made safe), or the fallback's."""
    return custom_file_name(name if name.strip() else sanitize(fallback) or "lora")


def written_text(written: WrittenLora, notes: list[str], seconds: float) -> str:
    meta = written.metadata
    lines = [
        f"Wrote **{os.path.basename(written.path)}** in {seconds:.1f} s: {written.modules} modules, "
        f"rank {meta['ss_network_dim']}, alpha {meta['ss_network_alpha']}, for {meta['ss_base_model_version']}."
    ]
    return "\n\n".join(lines + notes)


def lora_names(folder: str) -> list[str]:
    """The LoRA files of the folder (and below), named as the WebUI names them: the stem."""
    names = []
    for root, dirs, files in os.walk(folder):
        dirs.sort()
        for file in sorted(files):
            stem, ext = os.path.splitext(file)
            if ext.lower() in LORA_EXTENSIONS and inside_folder(os.path.join(root, file), folder):
                names.append(stem)
    return names


def lora_reports(lines: list[str], folder: str, model: str | None) -> str:
    """For each line: the LoRA's types, ranks, alpha, base and matched modules (in `model`, or in the
    base's reference layout); a line that fails says why, the others still report."""
    from lib_merge.errors import AlloyError
    from lib_merge.io.source import SourceModel
    from lib_merge.lora.inspect import inspect_lora

    shapes, label = None, None
    if model:
        source = SourceModel(model)
        try:
            shapes, label = source.shapes, source.name
        finally:
            source.close()
    out = []
    for line in lines:
        try:
            name, strength, blocks = parse_lora_spec(line)
            report = inspect_lora(find_lora(name, folder), shapes, label)
        except AlloyError as e:
            out.append(f"- **{line}**: {e}")
            continue
        kinds = ", ".join(f"{k} {n}" for k, n in sorted(report.kinds.items()))
        ranks = ", ".join(str(r) for r in sorted(report.ranks)) or "none"
        alphas = ", ".join(sorted(report.alphas))
        base = report.base_label
        text = (f"- **{name}** × {strength:g}{' blocks ' + blocks if blocks else ''}: {kinds}; rank {ranks}; "
                f"alpha {alphas}; base {base}; {report.matched} of {report.modules} modules matched in "
                f"{report.checked_against}")  # fmt: skip
        if report.unmatched:
            text += f" (not found: {', '.join(report.unmatched[:5])}{', …' if len(report.unmatched) > 5 else ''})"
        out.append(text)
    return "\n".join(out)
