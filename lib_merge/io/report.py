"""Header-level reports of checkpoints and architectures (`inspect`, `info`)."""

from __future__ import annotations

import os
from collections import Counter

from lib_merge.arch.blocks import VAE_SLOT, schema_for
from lib_merge.arch.layouts import LAYOUT_LABELS, SINGLE_FILE
from lib_merge.arch.registry import ARCHITECTURES, PREDICTION_MARKERS
from lib_merge.io.dtypes import DTYPE_NAMES
from lib_merge.io.source import SourceModel


def _size(n: float) -> str:
    for unit in ("B", "KB", "MB", "GB"):
        if n < 1024 or unit == "GB":
            return f"{n:,.0f} {unit}" if unit == "B" else f"{n:,.2f} {unit}"
        n /= 1024
    return str(n)


def inspect_model(path: str) -> dict:
    """Facts about one checkpoint read from its header: what `inspect` prints."""
    model = SourceModel(path)
    try:
        return inspect_source(model)
    finally:
        model.close()


def inspect_source(model: SourceModel) -> dict:
    """The header facts of an open model (the Toolkit's full report adds to them without opening it again)."""
    info = model.arch
    arch = info.arch
    components: dict[str, dict] = {}
    unknown = Counter()
    for key in model.keys:
        t = model.info(key)
        name = arch.component_of(key) if arch else None
        if name is None:
            unknown["ema" if key.startswith("model_ema.") else "extra"] += t.nbytes
            continue
        c = components.setdefault(name, {"keys": 0, "bytes": 0, "dtypes": Counter()})
        c["keys"] += 1
        c["bytes"] += t.nbytes
        c["dtypes"][DTYPE_NAMES[t.dtype]] += 1
    kept = [k for k in model.keys if arch is None or arch.component_of(k) or k in PREDICTION_MARKERS]
    return {
        "file": model.path,
        "format": "safetensors" if model.path.endswith(".safetensors") else "pickle (weights-only)",
        "size": os.path.getsize(model.path),
        "tensors": len(model.keys),
        "layout": model.layout,
        "stored_tensors": len(model.file.file.keys()) if model.layout != SINGLE_FILE else len(model.keys),
        "tensor_bytes": sum(model.info(k).nbytes for k in model.keys),
        "dtypes": dict(Counter(DTYPE_NAMES[model.info(k).dtype] for k in model.keys)),
        "metadata_keys": sorted(model.metadata),
        "architecture": info.id,
        "label": info.label,
        "variant": info.variant,
        "prediction": info.prediction,
        "prediction_source": info.prediction_source,
        "components": {k: {**v, "dtypes": dict(v["dtypes"])} for k, v in components.items()},
        "components_missing": info.components_missing,
        "aliases": len(info.aliases),
        "rejected": info.rejected,
        "ema_keys": sum(1 for k in model.keys if k.startswith("model_ema.")),
        "extra_bytes": unknown["extra"],
        "ema_bytes": unknown["ema"],
        "prune_keys": len(kept),
        "prune_bytes": sum(model.info(k).nbytes for k in kept),
    }


def format_inspect(r: dict) -> str:
    lines = [
        f"file: {r['file']}",
        f"format: {r['format']}, size {_size(r['size'])}, {r['tensors']:,} tensors, {_size(r['tensor_bytes'])}",
        "dtypes: " + ", ".join(f"{k} {v}" for k, v in sorted(r["dtypes"].items())),
        f"architecture: {r['label']} ({r['architecture']}), prediction {r['prediction']} ({r['prediction_source']})",
    ]
    if r["layout"] != SINGLE_FILE:
        lines.append(
            f"layout: {LAYOUT_LABELS[r['layout']]}, {r['stored_tensors']:,} stored tensors read as {r['tensors']:,}"
        )
    for name, c in r["components"].items():
        dts = ", ".join(f"{k} {v}" for k, v in sorted(c["dtypes"].items()))
        lines.append(f"  {name}: {c['keys']} keys, {_size(c['bytes'])} ({dts})")
    if r["components_missing"]:
        lines.append("components missing: " + ", ".join(r["components_missing"]))
    if r["aliases"]:
        lines.append(f"CLIP keys renamed from NAI layout: {r['aliases']}")
    if r["ema_keys"]:
        lines.append(f"EMA: {r['ema_keys']} keys, {_size(r['ema_bytes'])}")
    if r["extra_bytes"]:
        lines.append(f"extra keys outside the components: {_size(r['extra_bytes'])}")
    if r["metadata_keys"]:
        lines.append("metadata: " + ", ".join(r["metadata_keys"]))
    lines.append(f"would prune to: {r['prune_keys']:,} keys, {_size(r['prune_bytes'])}")
    if r["rejected"]:
        lines.append("rejected candidates:")
        lines += [f"  {x}" for x in r["rejected"]]
    return "\n".join(lines)


def describe_architectures() -> str:
    lines = []
    for arch in ARCHITECTURES.values():
        schema = schema_for(arch.id)
        blocks = f"schema {schema.id} ({len(schema)} blocks + VAE)" if schema else "no block schema"
        comps = ", ".join(f"{n} ({p})" for n, p in arch.components.items())
        lines.append(f"{arch.id}: {arch.label}; {blocks}; components: {comps}")
    return "\n".join(lines)


def describe_schema(arch_id: str, verbose: bool) -> str:
    arch = ARCHITECTURES[arch_id]
    schema = schema_for(arch_id)
    if schema is None:
        return f"{arch.label} has no block schema"
    keys_by_slot: dict[str, list[str]] = {s: [] for s in schema.names_with_vae()}
    for key in arch.keys:
        if arch.component_of(key):
            slot = schema.slot_of(key)
            if slot:
                keys_by_slot[slot].append(key)
    lines = [f"{arch.label}: schema {schema.id}, {len(schema)} blocks + {VAE_SLOT}"]
    for slot, keys in keys_by_slot.items():
        lines.append(f"{slot}: {len(keys)} keys")
        if verbose:
            lines += [f"    {k}" for k in keys]
    return "\n".join(lines)
