"""Attention similarity: how alike two models' attention modules answer the same input.

For each attention module (UNet self/cross attention, text-encoder layers, Flux double and single
blocks), x ∈ ℝ^{64×d_in} is drawn from a fixed seed (and a context of the key/value width for cross
attention); each model computes softmax(q·kᵀ/√d_h)·v per head and its output projection; the
similarity is the mean over rows of cos(out_A, out_B), in %. Only one module's weights are in memory.
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable
from dataclasses import dataclass

import torch

from lib_merge.io.source import SourceModel

SEED = 2244096
ROWS = 64


@dataclass(frozen=True)
class AttentionModule:
    """Where one attention module's weights are, and how to split them."""

    first_key: str  # the key the result is listed under
    kind: str  # "split" (to_q/k/v, q/k/v_proj), "fused" (in_proj / qkv), "flux_single"
    prefix: str
    head_dim: int


def find_modules(keys: list[str], arch_id: str) -> list[AttentionModule]:
    found = []
    unet_head = None if arch_id == "sd1" else 64  # SD1: 8 heads of C/8
    for key in keys:
        if key.endswith((".attn1.to_q.weight", ".attn2.to_q.weight")):
            found.append(AttentionModule(key, "unet", key[: -len("to_q.weight")], unet_head or 0))
        elif key.endswith(".self_attn.q_proj.weight"):
            found.append(AttentionModule(key, "clip", key[: -len("q_proj.weight")], 64))
        elif key.endswith(".attn.in_proj_weight"):
            found.append(AttentionModule(key, "openclip", key[: -len("in_proj_weight")], 64))
        elif re.search(r"double_blocks\.\d+\.(img|txt)_attn\.qkv\.weight$", key):
            found.append(AttentionModule(key, "flux_double", key[: -len("qkv.weight")], 128))
        elif re.search(r"single_blocks\.\d+\.linear1\.weight$", key):
            found.append(AttentionModule(key, "flux_single", key[: -len("linear1.weight")], 128))
    return found


@dataclass
class _Weights:
    q: torch.Tensor
    k: torch.Tensor
    v: torch.Tensor
    out: torch.Tensor
    q_bias: torch.Tensor | None = None
    k_bias: torch.Tensor | None = None
    v_bias: torch.Tensor | None = None
    out_bias: torch.Tensor | None = None
    q_norm: torch.Tensor | None = None  # RMSNorm scales of Flux's q and k, per head dim
    k_norm: torch.Tensor | None = None


def _read(source: SourceModel, module: AttentionModule) -> _Weights:
    def get(name: str) -> torch.Tensor | None:
        key = module.prefix + name
        return source.read(key).float() if key in source else None

    if module.kind == "unet":
        return _Weights(get("to_q.weight"), get("to_k.weight"), get("to_v.weight"), get("to_out.0.weight"),
                        out_bias=get("to_out.0.bias"))  # fmt: skip
    if module.kind == "clip":
        return _Weights(get("q_proj.weight"), get("k_proj.weight"), get("v_proj.weight"), get("out_proj.weight"),
                        get("q_proj.bias"), get("k_proj.bias"), get("v_proj.bias"), get("out_proj.bias"))  # fmt: skip
    if module.kind == "openclip":
        q, k, v = get("in_proj_weight").chunk(3)
        bias = get("in_proj_bias")
        qb, kb, vb = bias.chunk(3) if bias is not None else (None, None, None)
        return _Weights(q, k, v, get("out_proj.weight"), qb, kb, vb, get("out_proj.bias"))
    if module.kind == "flux_double":
        q, k, v = get("qkv.weight").chunk(3)
        bias = get("qkv.bias")
        qb, kb, vb = bias.chunk(3) if bias is not None else (None, None, None)
        return _Weights(q, k, v, get("proj.weight"), qb, kb, vb, get("proj.bias"),
                        get("norm.query_norm.scale"), get("norm.key_norm.scale"))  # fmt: skip
    width = get("linear2.weight").shape[0]  # flux single: linear1 = [q; k; v; mlp in], linear2 = [attn | mlp] → C
    linear1, bias1 = get("linear1.weight"), get("linear1.bias")
    q, k, v = linear1[:width], linear1[width : 2 * width], linear1[2 * width : 3 * width]
    qb, kb, vb = (
        (bias1[:width], bias1[width : 2 * width], bias1[2 * width : 3 * width]) if bias1 is not None else (None,) * 3
    )
    return _Weights(q, k, v, get("linear2.weight")[:, :width], qb, kb, vb, None,
                    get("norm.query_norm.scale"), get("norm.key_norm.scale"))  # fmt: skip


def _heads(width: int, module: AttentionModule) -> int:
    if module.head_dim == 0:  # SD1: 8 heads
        return 8 if width % 8 == 0 else 1
    return width // module.head_dim if width >= module.head_dim and width % module.head_dim == 0 else 1


def _linear(x: torch.Tensor, w: torch.Tensor, b: torch.Tensor | None) -> torch.Tensor:
    y = x @ w.T
    return y + b if b is not None else y


def attention_output(w: _Weights, x: torch.Tensor, context: torch.Tensor, heads: int) -> torch.Tensor:
    q, k, v = _linear(x, w.q, w.q_bias), _linear(context, w.k, w.k_bias), _linear(context, w.v, w.v_bias)
    n, width = q.shape
    head = width // heads
    q, k, v = (t.reshape(t.shape[0], heads, head).transpose(0, 1) for t in (q, k, v))
    if w.q_norm is not None:  # Flux: RMSNorm of q and k per head
        q = q * torch.rsqrt(q.square().mean(-1, keepdim=True) + 1e-6) * w.q_norm
        k = k * torch.rsqrt(k.square().mean(-1, keepdim=True) + 1e-6) * w.k_norm
    weights = torch.softmax(q @ k.transpose(1, 2) / math.sqrt(head), dim=-1)
    out = (weights @ v).transpose(0, 1).reshape(n, width)
    return _linear(out, w.out, w.out_bias)


def module_similarity(a: SourceModel, b: SourceModel, module: AttentionModule) -> float | None:
    """Mean row cosine of the two models' outputs, in %; None when the shapes differ."""
    wa, wb = _read(a, module), _read(b, module)
    if any(x is None for x in (wa.q, wa.k, wa.out, wb.q, wb.k, wb.out)) or wa.q.shape != wb.q.shape:
        return None
    if wa.k.shape != wb.k.shape or wa.out.shape != wb.out.shape:
        return None
    generator = torch.Generator().manual_seed(SEED)
    x = torch.randn(ROWS, wa.q.shape[1], generator=generator)
    context = x if wa.k.shape[1] == wa.q.shape[1] else torch.randn(ROWS, wa.k.shape[1], generator=generator)
    heads = _heads(wa.q.shape[0], module)
    if wa.q_norm is not None:  # Flux: the q/k norm scales are one head wide
        heads = wa.q.shape[0] // wa.q_norm.numel()
    out_a, out_b = attention_output(wa, x, context, heads), attention_output(wb, x, context, heads)
    cos = torch.nn.functional.cosine_similarity(out_a.double(), out_b.double(), dim=1)
    same = (out_a.norm(dim=1) == 0) & (out_b.norm(dim=1) == 0)
    return float(torch.where(same, torch.ones_like(cos), cos).mean()) * 100


def attention_similarity(
    a: SourceModel, b: SourceModel, progress: Callable[[int, int], None] | None = None
) -> dict[str, float]:
    """first key of each attention module → similarity in %."""
    modules = find_modules(list(a.keys), a.arch.id)
    found = {}
    for done, module in enumerate(modules, 1):
        sim = module_similarity(a, b, module)
        if sim is not None:
            found[module.first_key] = sim
        if progress is not None:
            progress(done, len(modules))
    return found
