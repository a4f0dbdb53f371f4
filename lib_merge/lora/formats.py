"""LoRA file formats: a state dict grouped into modules, and each module's weight change ΔW.

One file may mix module types (kohya LoRA/LoCon with Tucker mids, LyCORIS LoHa, LoKr, IA3, full
and norm diffs, DoRA on any of them, PEFT/diffusers lora_A/lora_B). The formulas are the ones the
WebUI applies at generation time (docs/FORMULAS.md §10); strength is applied by the caller, linearly.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

import torch

from lib_merge.errors import LoraFormatError

# Suffix → the part's name, longest first so that ".lora_down.weight" wins over an IA3 ".weight".
_SUFFIXES = (
    (".lora_down.weight", "down"),
    (".lora_up.weight", "up"),
    (".lora_mid.weight", "mid"),
    (".lora_A.weight", "down"),
    (".lora_B.weight", "up"),
    (".lora_A.default.weight", "down"),  # PEFT with its adapter's name left in
    (".lora_B.default.weight", "up"),
    (".lora.down.weight", "down"),  # diffusers' older LoRA layers
    (".lora.up.weight", "up"),
    (".hada_w1_a", "hada_w1_a"),
    (".hada_w1_b", "hada_w1_b"),
    (".hada_w2_a", "hada_w2_a"),
    (".hada_w2_b", "hada_w2_b"),
    (".hada_t1", "hada_t1"),
    (".hada_t2", "hada_t2"),
    (".lokr_w1_a", "lokr_w1_a"),
    (".lokr_w1_b", "lokr_w1_b"),
    (".lokr_w2_a", "lokr_w2_a"),
    (".lokr_w2_b", "lokr_w2_b"),
    (".lokr_w1", "lokr_w1"),
    (".lokr_w2", "lokr_w2"),
    (".lokr_t2", "lokr_t2"),
    (".dora_scale", "dora_scale"),
    (".diff_b", "diff_b"),
    (".diff", "diff"),
    (".w_norm", "w_norm"),
    (".b_norm", "b_norm"),
    (".on_input", "on_input"),
    (".alpha", "alpha"),
    (".bias", "bias"),
    (".weight", "ia3"),
)
PEFT_PREFIXES = ("base_model.model.", "unet.", "text_encoder.", "transformer.", "diffusion_model.")
# kohya's split_qkv: "X.lora_down.<i>.weight" / "X.lora_up.<i>.weight" are part i of X's fused weight
# (q, k, v; a Flux single block's linear1 also mlp), with X's one alpha. Each part is a module "X.<i>".
_SPLIT_PART = re.compile(r"^(.+)\.lora_(down|up)\.(\d+)\.weight$")


@dataclass
class LoraModule:
    """One module of a LoRA file: its name as written and its tensors by part."""

    name: str
    parts: dict[str, torch.Tensor] = field(default_factory=dict)

    @property
    def kind(self) -> str:
        p = self.parts
        if "up" in p and "down" in p:
            return "lora"
        if "hada_w1_a" in p:
            return "loha"
        if "lokr_w1" in p or "lokr_w1_a" in p:
            return "lokr"
        if "diff" in p:
            return "full"
        if "w_norm" in p:
            return "norm"
        if "ia3" in p:
            return "ia3"
        raise LoraFormatError(f"module {self.name!r} has no known LoRA parts: {', '.join(sorted(p))}")

    @property
    def dora(self) -> bool:
        return "dora_scale" in self.parts

    @property
    def rank(self) -> int | None:
        p = self.parts
        if "down" in p:
            return int(p["down"].shape[0])
        if "hada_w1_b" in p:
            return int(p["hada_w1_b"].shape[0])
        for name in ("lokr_w1_b", "lokr_w2_b"):
            if name in p:
                return int(p[name].shape[0])
        return None

    @property
    def alpha(self) -> float | None:
        return float(self.parts["alpha"]) if "alpha" in self.parts else None

    def scale(self) -> float:
        """alpha / rank, or 1 without an alpha, with an alpha of 0 (kohya's trainers and loaders read 0 as
        "alpha = rank": the LoRA was trained at scale 1, so 0 would bake nothing), or with rank 0 (no
        division by zero: such a module changes nothing, which the bake reports)."""
        rank = self.rank
        if self.alpha is None or self.alpha == 0 or not rank:
            return 1.0
        return self.alpha / rank

    def is_zero(self) -> bool:
        """Whether ΔW is zero whatever the weight: a factor of a LoRA/LoHa product all zero (a LoRA saved
        before training: kohya starts every lora_up at zero), or an all-zero full or norm diff."""
        p = self.parts
        kind = self.kind
        if kind == "lora":
            return not (p["up"].any() and p["down"].any())
        if kind == "loha":
            return any(not p[f"hada_w{i}_{j}"].any() for i in (1, 2) for j in "ab")
        if kind in ("full", "norm"):
            return not p["diff" if kind == "full" else "w_norm"].any()
        return False


def group_modules(tensors: dict[str, torch.Tensor]) -> dict[str, LoraModule]:
    """The file's keys grouped into modules by their known suffixes; unknown keys are an error naming them."""
    modules: dict[str, LoraModule] = {}
    unknown = []
    for key, tensor in tensors.items():
        split = _SPLIT_PART.match(key)
        if split:
            name, part, index = split.groups()
            modules.setdefault(f"{name}.{index}", LoraModule(f"{name}.{index}")).parts[part] = tensor
            continue
        for suffix, part in _SUFFIXES:
            if key.endswith(suffix):
                name = key[: -len(suffix)]
                modules.setdefault(name, LoraModule(name)).parts[part] = tensor
                break
        else:
            unknown.append(key)
    # "P.weight" is IA3 only under a LoRA name or beside "on_input": a checkpoint's keys are not LoRA parts
    for name, m in list(modules.items()):
        if "ia3" in m.parts and not (name.startswith(("lora_", *PEFT_PREFIXES)) or "on_input" in m.parts):
            unknown.append(f"{name}.weight")
            del m.parts["ia3"]
    if unknown:
        raise LoraFormatError(f"{len(unknown)} keys are no LoRA part: {', '.join(sorted(unknown)[:5])}")
    for name, m in modules.items():  # a split part takes its whole module's alpha
        whole = modules.get(name.rpartition(".")[0]) if name.rpartition(".")[2].isdigit() else None
        if whole is not None and "alpha" in whole.parts and "alpha" not in m.parts:
            m.parts["alpha"] = whole.parts["alpha"]
    return {name: m for name, m in modules.items() if set(m.parts) - {"bias", "alpha"}}  # "P.bias" alone: none


def _lora_delta(m: LoraModule, shape: tuple[int, ...]) -> torch.Tensor:
    up, down = m.parts["up"].float(), m.parts["down"].float()
    if "mid" in m.parts:  # Tucker: mid [r, r, kh, kw]
        mid = m.parts["mid"].float()
        return torch.einsum("ijkl,jr,pi->prkl", mid, down.flatten(1), up.flatten(1))
    if len(shape) == 2 or down.dim() == 2:
        return (up.flatten(1) @ down.flatten(1)).reshape(shape)
    return (up.reshape(up.shape[0], -1) @ down.reshape(down.shape[0], -1)).reshape(shape)


def _factor(m: LoraModule, whole: str, a: str, b: str) -> torch.Tensor:
    p = m.parts
    if whole in p:
        return p[whole].float()
    return p[a].float().flatten(1) @ p[b].float().flatten(1)


def _loha_delta(m: LoraModule, shape: tuple[int, ...]) -> torch.Tensor:
    p = m.parts
    if "hada_t1" in p:  # Tucker forms: t [r, r, kh, kw]
        w1 = torch.einsum("ijkl,jr,ip->prkl", p["hada_t1"].float(), p["hada_w1_b"].float(), p["hada_w1_a"].float())
        w2 = torch.einsum("ijkl,jr,ip->prkl", p["hada_t2"].float(), p["hada_w2_b"].float(), p["hada_w2_a"].float())
        return (w1 * w2).reshape(shape)
    w1 = p["hada_w1_a"].float() @ p["hada_w1_b"].float()
    w2 = p["hada_w2_a"].float() @ p["hada_w2_b"].float()
    return (w1 * w2).reshape(shape)


def _lokr_delta(m: LoraModule, shape: tuple[int, ...]) -> torch.Tensor:
    w1 = _factor(m, "lokr_w1", "lokr_w1_a", "lokr_w1_b")
    if "lokr_t2" in m.parts:
        w2 = torch.einsum(
            "ijkl,jr,ip->prkl", m.parts["lokr_t2"].float(), m.parts["lokr_w2_b"].float(), m.parts["lokr_w2_a"].float()
        )
    elif "lokr_w2" in m.parts:
        w2 = m.parts["lokr_w2"].float()
    else:
        w2 = m.parts["lokr_w2_a"].float() @ m.parts["lokr_w2_b"].float().flatten(1)
        if len(shape) == 4:
            w2 = w2.reshape(w2.shape[0], -1, *shape[2:]) if w2.numel() != 0 else w2
    if w2.dim() == 4 and w1.dim() == 2:
        w1 = w1[:, :, None, None]
    return torch.kron(w1, w2).reshape(shape)


def module_delta(m: LoraModule, weight: torch.Tensor) -> torch.Tensor:
    """ΔW of a module at strength 1 for a target weight (needed for its shape, and by IA3 and DoRA)."""
    shape = tuple(weight.shape)
    kind = m.kind
    scale = m.scale()
    if kind == "lora":
        delta = _lora_delta(m, shape)
    elif kind == "loha":
        delta = _loha_delta(m, shape)
    elif kind == "lokr":
        decomposed = any(k in m.parts for k in ("lokr_w1_a", "lokr_w2_a"))
        scale = scale if decomposed else 1.0
        delta = _lokr_delta(m, shape)
    elif kind == "full":
        return m.parts["diff"].float().reshape(shape)
    elif kind == "norm":
        return m.parts["w_norm"].float().reshape(shape)
    else:  # IA3: W ⊙ w along output rows, or input columns with on_input
        w = m.parts["ia3"].float()
        on_input = bool(m.parts["on_input"].item()) if "on_input" in m.parts else False
        view = (1, -1) + (1,) * (weight.dim() - 2) if on_input else (-1,) + (1,) * (weight.dim() - 1)
        return weight.float() * w.reshape(view)
    if not m.dora:
        return delta * scale
    return _dora(weight.float(), delta, m.parts["dora_scale"].float(), scale)


def _dora(weight: torch.Tensor, delta: torch.Tensor, dora_scale: torch.Tensor, scale: float) -> torch.Tensor:
    """ΔW = s·(W′·(dora_scale / n) − W), W′ = W + D (D without s), n the norms along dora_scale's axis."""
    merged = weight + delta
    if dora_scale.dim() >= 2 and dora_scale.shape[0] == 1:  # [1, in, …]: per input column (LyCORIS)
        dims = (0,)
        target = dora_scale.reshape((1,) + tuple(merged.shape[1:]))
    else:  # [out, 1, …] or [out]: per output row (PEFT)
        dims = tuple(range(1, merged.dim()))
        target = dora_scale.reshape((-1,) + (1,) * (merged.dim() - 1))
    norms = merged.norm(dim=dims, keepdim=True)
    return scale * (merged * (target / norms) - weight)


def module_bias_delta(m: LoraModule) -> torch.Tensor | None:
    """Δb at strength 1, where the module carries one."""
    for part in ("diff_b", "b_norm", "bias"):
        if part in m.parts:
            return m.parts[part].float()
    return None


def factor_shape(m: LoraModule) -> tuple[int, ...] | None:
    """The weight shape a module's own tensors tell (None for IA3 and DoRA, whose ΔW needs the weight).
    A LoHa or LoKr on a convolution without Tucker factors tells only [out, in·kh·kw]."""
    p = m.parts
    if m.dora:
        return None
    kind = m.kind
    if kind == "lora":
        up, down = p["up"], p["down"]
        if "mid" in p:
            return (up.shape[0], down.shape[1], *p["mid"].shape[2:])
        if up.dim() == 4 and down.dim() == 2:
            return (up.shape[0], down.shape[1], 1, 1)
        return (up.shape[0], *down.shape[1:])
    if kind == "loha":
        if "hada_t1" in p:
            return (p["hada_w1_a"].shape[0], p["hada_w1_b"].shape[1], *p["hada_t1"].shape[2:])
        return (p["hada_w1_a"].shape[0], p["hada_w1_b"].shape[1])
    if kind == "lokr":
        w1 = p["lokr_w1"] if "lokr_w1" in p else p["lokr_w1_a"] @ p["lokr_w1_b"]
        w2 = p["lokr_w2"] if "lokr_w2" in p else None
        if w2 is None and "lokr_t2" in p:
            return None
        rows2, cols2 = (
            (w2.shape[0], w2[0].numel()) if w2 is not None else (p["lokr_w2_a"].shape[0], p["lokr_w2_b"].shape[1])
        )
        return (w1.shape[0] * rows2, w1.shape[1] * cols2)
    if kind in ("full", "norm"):
        return tuple(p["diff" if kind == "full" else "w_norm"].shape)
    return None
