"""The safetensors metadata of a merged file: recipe, WebUI lineage, modelspec."""

from __future__ import annotations

import json
import os

import torch

from lib_merge import __version__
from lib_merge.arch.modelspec import modelspec_fields
from lib_merge.engine.bind import BoundRecipe
from lib_merge.io.hashing import legacy_hash
from lib_merge.methods import METHODS
from lib_merge.recipe.nodes import MergeNode, ModelRef, Node
from lib_merge.recipe.vectors import BlockVector


def _vector_text(value: object) -> str | None:
    if isinstance(value, BlockVector):
        return ",".join(repr(float(v)) for v in value.values)
    return None


def _scalar(value: object) -> float:
    """The WebUI merger's single "multiplier": BASE of a vector, the first of per-model values."""
    if isinstance(value, BlockVector):
        return float(value.values[0])
    return float(value[0]) if isinstance(value, tuple) else float(value)


def _json_or_none(text: str | None):
    try:
        return json.loads(text) if text else None
    except ValueError:
        return None


def build_metadata(
    bound: BoundRecipe,
    root: Node,
    recipe_text: str,
    recipe_hash: str,
    hashes: dict[ModelRef, str],
    output_path: str,
    output_dtype: torch.dtype,
    data_sha256: str,
) -> dict[str, str]:
    models = bound.models
    model_hashes = [hashes[m] for m in models]
    top = root if isinstance(root, MergeNode) else None
    params = top.params if top else {}
    merge_recipe = {
        "type": "alloy",
        "primary_model_hash": model_hashes[0],
        "secondary_model_hash": model_hashes[1] if len(model_hashes) > 1 else None,
        "tertiary_model_hash": model_hashes[2] if len(model_hashes) > 2 else None,
        "interp_method": METHODS[top.method].label if top else "",
        "multiplier": _scalar(params.get("alpha", 0.0)),
        "save_as_half": output_dtype == torch.float16,
        "custom_name": os.path.splitext(os.path.basename(output_path))[0],
        "config_source": 0,
        "bake_in_vae": "None",
        "discard_weights": "",
        "is_inpainting": bound.arch.variant == "inpainting",
        "is_instruct_pix2pix": bound.arch.variant == "pix2pix",
        "calcmode": "normal",
        "weights_alpha": _vector_text(params.get("alpha")),
        "weights_beta": _vector_text(params.get("beta")),
        "alloy_recipe_hash": recipe_hash,
    }
    lineage: dict[str, object] = {}
    for ref in models:
        source = bound.sources[ref]
        lineage[hashes[ref]] = {
            "name": os.path.splitext(source.name)[0],
            "legacy_hash": legacy_hash(source.path),
            "sd_merge_recipe": _json_or_none(source.metadata.get("sd_merge_recipe")),
        }
    for ref in models:
        inherited = _json_or_none(bound.sources[ref].metadata.get("sd_merge_models"))
        if isinstance(inherited, dict):
            lineage.update(inherited)
    info = bound.arch
    return {
        "format": "pt",
        "alloy_recipe": recipe_text,
        "alloy_recipe_hash": recipe_hash,
        "alloy_version": __version__,
        "sd_merge_recipe": json.dumps(merge_recipe),
        "sd_merge_models": json.dumps(lineage),
        **modelspec_fields(info.id, info.prediction, output_path, data_sha256, info.variant),
        "modelspec.merged_from": ", ".join(os.path.splitext(bound.sources[m].name)[0] for m in models),
    }
