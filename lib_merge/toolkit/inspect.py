"""The full inspect report: what a checkpoint or component file holds and what is wrong with it, from its
header (only the small position_ids tensors are read; fingerprints on request).

It extends the header report of io/report.py (whose fields stay as they are) with: metadata values,
rejected architectures with the keys they miss, unknown and useless keys, the bytes fp16 would save,
junk, position_ids, and the file's hashes when known.
"""

from __future__ import annotations

from collections import Counter

from lib_merge.arch.registry import ARCHITECTURES
from lib_merge.io.hashing import cached_sha256
from lib_merge.io.report import format_inspect, inspect_source
from lib_merge.io.source import SourceModel
from lib_merge.io.tempfiles import format_bytes
from lib_merge.toolkit.layout import JUNK_PREFIXES, component_file
from lib_merge.toolkit.prune import check_position_ids

JUNK_NOTICE = 16 * 2**20  # "contains … of junk" from this size on
_SAVED_BY_FP16 = {"float32": 0.5, "float64": 0.75}


def full_report(path: str, with_fingerprint: bool = False) -> dict:
    """The report as a JSON-ready dict (the `inspect --json` object)."""
    source = SourceModel(path)
    try:
        report = inspect_source(source)
        keys, info = source.keys, source.arch
        sizes = {k: source.info(k).nbytes for k in keys}
        report["metadata"] = {k: v if len(v) <= 200 else v[:200] + "…" for k, v in source.metadata.items()}
        found = component_file(source.shapes) if info.arch is None else None
        report["component_file"] = found.component if found else None
        report["candidates"] = _candidates(source)
        report.update(_foreign_keys(source, sizes))
        report["fp16_saves_bytes"] = int(sum(sizes[k] * _SAVED_BY_FP16.get(_dtype(source, k), 0) for k in keys))
        report["bf16_keys"] = sum(1 for k in keys if _dtype(source, k) == "bfloat16")
        report["junk"] = _junk(source, sizes)
        report["position_ids"] = [
            {"key": r.key, "dtype": r.dtype, "broken": [[i, v] for i, v in r.broken]}
            for r in check_position_ids(source)
        ]
        sha = cached_sha256(source.path)
        report["sha256"] = sha
        report["short_hash"] = sha[:10] if sha else None
    finally:
        source.close()
    if with_fingerprint:
        from dataclasses import asdict

        from lib_merge.toolkit.fingerprint import fingerprint

        report["fingerprint"] = asdict(fingerprint(path))
    return report


def _dtype(source: SourceModel, key: str) -> str:
    return str(source.info(key).dtype).removeprefix("torch.")


def _candidates(source: SourceModel) -> list[dict]:
    """Each architecture with a key list: how many of its keys the file has, and the first it misses."""
    out = []
    for arch in ARCHITECTURES.values():
        known = [k for k in arch.keys if arch.component_of(k) is not None]  # EMA and buffers are no loss
        if not known:
            continue
        missing = [k for k in known if k not in source]
        out.append({"id": arch.id, "keys": len(known), "missing": len(missing), "first_missing": missing[:5]})
    return out


def _foreign_keys(source: SourceModel, sizes: dict[str, int]) -> dict:
    """Keys outside the detected architecture: useless (another architecture's) or unknown (nobody's)."""
    arch = source.arch.arch
    if arch is None:
        return {"useless_keys": [], "useless_bytes": 0, "unknown_keys": [], "unknown_bytes": 0}
    own = arch.keys
    reported_elsewhere = (*JUNK_PREFIXES, "model_ema.")  # junk and EMA have their own lines
    outside = [
        k for k in source.keys if arch.component_of(k) is None and k not in own and not k.startswith(reported_elsewhere)
    ]
    others = [a for a in ARCHITECTURES.values() if a.id != arch.id and a.keys]
    useless = [k for k in outside if any(k in a.keys for a in others)]
    unknown = [k for k in outside if k not in set(useless)]
    return {
        "useless_keys": useless[:20],
        "useless_count": len(useless),
        "useless_bytes": sum(sizes[k] for k in useless),
        "unknown_keys": unknown[:20],
        "unknown_count": len(unknown),
        "unknown_bytes": sum(sizes[k] for k in unknown),
    }


def _junk(source: SourceModel, sizes: dict[str, int]) -> dict[str, int]:
    """Bytes of each kind of junk: embedding manager, optimizer/trainer state, wrapper leftovers, and the
    `cond_stage_model.*` copies some SDXL files carry beside `conditioner.*`."""
    junk: Counter = Counter()
    for key in source.keys:
        for prefix in JUNK_PREFIXES:
            if key.startswith(prefix):
                junk[prefix.rstrip(".")] += sizes[key]
        if source.arch.id == "sdxl" and key.startswith("cond_stage_model."):
            junk["cond_stage_model (SDXL duplicate)"] += sizes[key]
    return dict(junk)


def format_full_report(r: dict) -> str:
    """The text report: the header report's lines, then the Toolkit's findings."""
    lines = format_inspect(r).splitlines()
    if r.get("sha256"):
        lines.insert(1, f"sha256: {r['sha256']} (short {r['short_hash']})")
    if r["component_file"]:
        lines.append(f"component file: {r['component_file']} (keys without a checkpoint prefix)")
    if r["metadata"]:
        lines.append("metadata values:")
        lines += [f"  {k}: {v}" for k, v in sorted(r["metadata"].items())]
    lines.append("component keys of the known architectures:")
    for c in r["candidates"]:
        mark = " (detected)" if c["id"] == r["architecture"] else ""
        if not c["missing"]:
            lines.append(f"  {c['id']}{mark}: all {c['keys']:,}")
        else:
            first = ", ".join(c["first_missing"])
            lines.append(f"  {c['id']}{mark}: missing {c['missing']:,} of {c['keys']:,} (first: {first})")
    if r.get("useless_count"):
        size = format_bytes(r["useless_bytes"])
        lines.append(
            f"useless keys (another architecture's): {r['useless_count']}, {size}: " + ", ".join(r["useless_keys"])
        )
    if r.get("unknown_count"):
        lines.append(
            f"unknown keys: {r['unknown_count']}, {format_bytes(r['unknown_bytes'])}: " + ", ".join(r["unknown_keys"])
        )
    bf16 = f"; {r['bf16_keys']} bf16 tensors: bf16 → fp16 needs a range check" if r["bf16_keys"] else ""
    lines.append(f"pruning to fp16 saves {format_bytes(r['fp16_saves_bytes'])}{bf16}")
    junk = sum(r["junk"].values())
    for kind, size in sorted(r["junk"].items()):
        lines.append(f"junk: {kind}: {format_bytes(size)}")
    if junk > JUNK_NOTICE:
        lines.append(f"contains {format_bytes(junk)} of junk")
    for p in r["position_ids"]:
        if p["broken"]:
            shown = ", ".join(f"{v:g} at {i}" for i, v in p["broken"][:5])
            lines.append(f"position_ids {p['key']} ({p['dtype']}): broken: {len(p['broken'])} ({shown})")
        else:
            lines.append(f"position_ids {p['key']} ({p['dtype']}): fine")
    if "fingerprint" in r:
        from lib_merge.toolkit.fingerprint import Fingerprint

        lines += Fingerprint(**r["fingerprint"]).lines()[1:]
    return "\n".join(lines)
