"""The permutation cache: one small safetensors file per pair of models (int32 index vectors per
group), so an alpha sweep or an XYZ plot matches once. A damaged or outdated file is ignored and
replaced; it is never an error."""

from __future__ import annotations

import contextlib
import json
import os
from pathlib import Path

import torch
from safetensors.torch import load as load_bytes
from safetensors.torch import save as save_bytes

from lib_merge.io.tempfiles import write_file
from lib_merge.paths import user_data_dir
from lib_merge.rebasin.groups import Group

FORMAT = "alloy-rebasin 1"  # bump when the group definitions change
MAX_CACHE_BYTES = 256 * 2**20


def cache_folder() -> Path:
    return user_data_dir() / "rebasin"


def cache_path(folder: Path, sha_a: str, sha_b: str) -> Path:
    return folder / f"{sha_a[:16]}_{sha_b[:16]}.safetensors"


def load_permutations(
    path: Path, groups: list[Group], sha_a: str, sha_b: str, max_sweeps: int
) -> dict[str, torch.Tensor] | None:
    """The cached permutations of these models, or None when there are none that fit."""
    try:
        if os.path.getsize(path) > MAX_CACHE_BYTES:
            return None
        with open(path, "rb") as f:
            data = f.read(MAX_CACHE_BYTES + 1)
        tensors = load_bytes(data)
        meta = _metadata(data)
    except Exception:  # noqa: BLE001 - any unreadable file is a cache miss
        return None
    if meta.get("format") != FORMAT or meta.get("a_sha256") != sha_a or meta.get("b_sha256") != sha_b:
        return None
    if meta.get("converged") != "true" and meta.get("max_sweeps") != str(max_sweeps):
        return None  # stopped by its own sweep cap: only the same cap gives the same answer
    perms: dict[str, torch.Tensor] = {}
    for g in groups:
        p = tensors.get(g.name)
        if p is None or p.dim() != 1 or len(p) != g.size or p.dtype != torch.int32:
            return None
        p = p.to(torch.int64)
        if not torch.equal(p.sort().values, torch.arange(g.size)):  # not a permutation of 0…size−1
            return None
        perms[g.name] = p
    return perms


def store_permutations(
    path: Path, perms: dict[str, torch.Tensor], sha_a: str, sha_b: str, max_sweeps: int, converged: bool
) -> None:
    """Written atomically; a folder that cannot be written only costs the next run a new match."""
    meta = {
        "format": FORMAT,
        "a_sha256": sha_a,
        "b_sha256": sha_b,
        "max_sweeps": str(max_sweeps),
        "converged": "true" if converged else "false",
    }
    data = save_bytes({name: p.to(torch.int32).contiguous() for name, p in perms.items()}, metadata=meta)
    with contextlib.suppress(OSError):
        path.parent.mkdir(parents=True, exist_ok=True)
        write_file(str(path), lambda f: f.write(data), overwrite=True)


def _metadata(data: bytes) -> dict[str, str]:
    n = int.from_bytes(data[:8], "little")
    return json.loads(data[8 : 8 + n]).get("__metadata__", {})
