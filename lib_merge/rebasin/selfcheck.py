"""Proof by computation that the permutation groups are exact symmetries (docs/REBASIN.md §4).

One transformer block, the embedding MLPs and one text-encoder layer of each supported
architecture are built with the real key names and shapes, run with plain torch ops on seeded
inputs, permuted with random permutations of every group, and run again: the outputs must agree
to fp32 rounding. A model matched to itself must come back with identity permutations.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from lib_merge.arch.registry import ARCHITECTURES
from lib_merge.errors import SelfCheckError
from lib_merge.rebasin.groups import CLIP_L_HEADS, OPEN_CLIP_HEADS, SD1_UNET_HEADS, UNET, Group, permutation_groups
from lib_merge.rebasin.matching import MatchSettings, TensorReader, match_models
from lib_merge.rebasin.permuted import Permutations

SEED = 1213
TOLERANCE = 1e-5  # max |y − y′| ≤ TOLERANCE · max(1, max |y|), in fp32
TOKENS = 77

# arch -> (UNet transformer block, its width, the layers of the text encoders to check)
BLOCKS = {
    "sd1": (UNET + "input_blocks.1.1.transformer_blocks.0", 320),
    "sd2": (UNET + "input_blocks.1.1.transformer_blocks.0", 320),
    "sdxl": (UNET + "input_blocks.4.1.transformer_blocks.0", 640),
}
TEXT_LAYERS = {
    "sd1": ["cond_stage_model.transformer.text_model.encoder.layers.0"],
    "sd2": ["cond_stage_model.model.transformer.resblocks.0"],
    "sdxl": [
        "conditioner.embedders.0.transformer.text_model.encoder.layers.0",
        "conditioner.embedders.1.model.transformer.resblocks.0",
    ],
}
EMBEDDINGS = [UNET + "time_embed", UNET + "label_emb.0"]


@dataclass(frozen=True)
class CheckResult:
    what: str  # "sdxl attn2 of model.diffusion_model.input_blocks.4.1.transformer_blocks.0"
    groups: tuple[str, ...]  # the groups permuted for this check
    error: float  # max |y − y′|
    scale: float  # max(1, max |y|)

    @property
    def passed(self) -> bool:
        return self.error <= TOLERANCE * self.scale


def block_checks(
    seed: int = SEED, groups_of: Callable[[dict[str, tuple[int, ...]], str], list[Group]] = permutation_groups
) -> list[CheckResult]:
    """Every check of every supported architecture. `groups_of` is the group definition under test."""
    results: list[CheckResult] = []
    for arch in BLOCKS:
        weights = _weights(arch, seed)
        groups = groups_of({k: tuple(t.shape) for k, t in weights.items()}, arch)
        gen = torch.Generator().manual_seed(seed + 1)
        perms = Permutations(groups, {g.name: torch.randperm(g.size, generator=gen) for g in groups})
        permuted = {k: perms.apply(k, t) for k, t in weights.items()}
        for what, module, run in _modules(arch, weights, seed):
            y, y2 = run(weights), run(permuted)
            touched = tuple(g.name for g in groups if g.layer.startswith(module))
            scale = max(1.0, float(y.abs().max()))
            results.append(CheckResult(f"{arch} {what}", touched, float((y - y2).abs().max()), scale))
    return results


def check_blocks(seed: int = SEED) -> list[CheckResult]:
    """The block checks; SelfCheckError on the first that fails."""
    results = block_checks(seed)
    for r in results:
        if not r.passed:
            shown = ", ".join(r.groups[:3]) + (", …" if len(r.groups) > 3 else "")
            allowed = TOLERANCE * r.scale
            raise SelfCheckError(
                f"self-check failed for group {shown}: {r.what} changed by {r.error:.3g} (allowed {allowed:.3g})"
            )
    return results


def check_identity(
    model: TensorReader,
    groups: list[Group],
    settings: MatchSettings = MatchSettings(),
    check: Callable[[], None] | None = None,
    progress: Callable[[int, int], None] | None = None,
) -> int:
    """Match a model to itself: every permutation must be the identity. Returns the groups checked."""
    result = match_models(model, model, groups, settings, check, progress)
    for name, p in result.permutations.items():
        if not torch.equal(p, torch.arange(len(p))):
            raise SelfCheckError(f"self-check failed for group {name}: the model matched to itself is permuted")
    return len(result.permutations)


def _weights(arch: str, seed: int) -> dict[str, torch.Tensor]:
    """The block's, the embeddings' and the text layers' tensors at their real shapes, seeded."""
    block, _ = BLOCKS[arch]
    prefixes = [block + ".", *(e + "." for e in EMBEDDINGS), *(t + "." for t in TEXT_LAYERS[arch])]
    gen = torch.Generator().manual_seed(seed)
    weights = {}
    for key, (shape, _) in ARCHITECTURES[arch].keys.items():
        if any(key.startswith(p) for p in prefixes) and key.endswith(("weight", "bias")):
            fan_in = shape[1] if len(shape) > 1 else 1
            t = torch.randn(tuple(shape), generator=gen) / math.sqrt(fan_in)
            weights[key] = t + 1.0 if len(shape) == 1 and key.endswith(".weight") else t  # norms scale around 1
    return weights


def _modules(arch: str, w: dict[str, torch.Tensor], seed: int):
    """(what, module prefix, function of the weights) for every module to check."""
    gen = torch.Generator().manual_seed(seed + 2)
    block, width = BLOCKS[arch]
    context_width = w[block + ".attn2.to_k.weight"].shape[1]
    x = torch.randn(2, TOKENS, width, generator=gen)
    context = torch.randn(2, TOKENS, context_width, generator=gen)
    heads = SD1_UNET_HEADS if arch == "sd1" else width // 64
    yield f"attn1 of {block}", block, lambda t: _unet_attention(t, block + ".attn1.", x, x, heads)
    yield f"attn2 of {block}", block, lambda t: _unet_attention(t, block + ".attn2.", x, context, heads)
    yield f"feed-forward of {block}", block, lambda t: _geglu(t, block + ".ff.net.", x)
    for module in EMBEDDINGS:
        if module + ".0.weight" in w:
            inputs = torch.randn(2, w[module + ".0.weight"].shape[1], generator=gen)
            yield f"{module} MLP", module, lambda t, m=module, i=inputs: _silu_mlp(t, m, i)
    for layer in TEXT_LAYERS[arch]:
        if layer + ".self_attn.q_proj.weight" in w:
            hidden = torch.randn(2, TOKENS, w[layer + ".self_attn.q_proj.weight"].shape[0], generator=gen)
            yield f"CLIP-L layer {layer}", layer, lambda t, p=layer, h=hidden: _clip_l_layer(t, p, h)
        else:
            hidden = torch.randn(2, TOKENS, w[layer + ".attn.out_proj.weight"].shape[0], generator=gen)
            n = OPEN_CLIP_HEADS[arch]
            yield f"OpenCLIP layer {layer}", layer, lambda t, p=layer, h=hidden, n=n: _open_clip_layer(t, p, h, n)


def _attend(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, heads: int, causal: bool = False) -> torch.Tensor:
    b, n, c = q.shape
    split = [t.reshape(b, t.shape[1], heads, -1).transpose(1, 2) for t in (q, k, v)]
    d = split[0].shape[-1]
    scores = split[0] @ split[1].transpose(-1, -2) / math.sqrt(d)
    if causal:
        scores = scores + torch.full((n, n), float("-inf")).triu(1)
    return (scores.softmax(-1) @ split[2]).transpose(1, 2).reshape(b, n, -1)


def _unet_attention(w, p: str, x: torch.Tensor, context: torch.Tensor, heads: int) -> torch.Tensor:
    q, k, v = x @ w[p + "to_q.weight"].T, context @ w[p + "to_k.weight"].T, context @ w[p + "to_v.weight"].T
    return F.linear(_attend(q, k, v, heads), w[p + "to_out.0.weight"], w[p + "to_out.0.bias"])


def _geglu(w, p: str, x: torch.Tensor) -> torch.Tensor:
    value, gate = F.linear(x, w[p + "0.proj.weight"], w[p + "0.proj.bias"]).chunk(2, dim=-1)
    return F.linear(value * F.gelu(gate), w[p + "2.weight"], w[p + "2.bias"])


def _silu_mlp(w, p: str, x: torch.Tensor) -> torch.Tensor:
    return F.linear(F.silu(F.linear(x, w[p + ".0.weight"], w[p + ".0.bias"])), w[p + ".2.weight"], w[p + ".2.bias"])


def _norm(w, p: str, x: torch.Tensor) -> torch.Tensor:
    return F.layer_norm(x, x.shape[-1:], w[p + ".weight"], w[p + ".bias"])


def _clip_l_layer(w, p: str, x: torch.Tensor) -> torch.Tensor:
    a = p + ".self_attn."
    h = _norm(w, p + ".layer_norm1", x)
    q, k, v = (F.linear(h, w[a + f"{n}_proj.weight"], w[a + f"{n}_proj.bias"]) for n in "qkv")
    x = x + F.linear(_attend(q, k, v, CLIP_L_HEADS, causal=True), w[a + "out_proj.weight"], w[a + "out_proj.bias"])
    h = F.linear(_norm(w, p + ".layer_norm2", x), w[p + ".mlp.fc1.weight"], w[p + ".mlp.fc1.bias"])
    return x + F.linear(h * torch.sigmoid(1.702 * h), w[p + ".mlp.fc2.weight"], w[p + ".mlp.fc2.bias"])


def _open_clip_layer(w, p: str, x: torch.Tensor, heads: int) -> torch.Tensor:
    h = _norm(w, p + ".ln_1", x)
    q, k, v = F.linear(h, w[p + ".attn.in_proj_weight"], w[p + ".attn.in_proj_bias"]).chunk(3, dim=-1)
    x = x + F.linear(_attend(q, k, v, heads, causal=True), w[p + ".attn.out_proj.weight"], w[p + ".attn.out_proj.bias"])
    h = F.gelu(F.linear(_norm(w, p + ".ln_2", x), w[p + ".mlp.c_fc.weight"], w[p + ".mlp.c_fc.bias"]))
    return x + F.linear(h, w[p + ".mlp.c_proj.weight"], w[p + ".mlp.c_proj.bias"])
