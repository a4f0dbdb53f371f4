"""Permutation groups: weight slices that can be reordered together without changing what the
network computes (docs/REBASIN.md §1).

Only exact symmetries are listed: the channels inside one attention head (q and k together, v
and the output projection together), the hidden units of feed-forward and MLP layers and of the
time and label embedding MLPs. The residual stream, convolutions, norms, the VAE and embeddings
are never permuted, so no tensor has two permuted axes and groups do not depend on each other.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass

from lib_merge.errors import UnsupportedError

SUPPORTED = ("sd1", "sd2", "sdxl")
UNET = "model.diffusion_model."
SD1_UNET_HEADS = 8  # SD1's UNet has 8 heads at every width; SD2 and SDXL use 64 channels per head
UNET_HEAD_WIDTH_PER_BASE = 5  # SD2/SDXL: heads = 5 · C / model_channels (64 channels when C = 320 · k)
CLIP_L_HEADS = 12
OPEN_CLIP_HEADS = {"sd2": 16, "sdxl": 20}  # OpenCLIP-H (1024 wide), OpenCLIP-bigG (1280 wide): 64 each

_TRANSFORMER = re.compile(r"^(model\.diffusion_model\..*\.transformer_blocks\.\d+)\.attn1\.to_q\.weight$")
_CLIP_L = re.compile(r"^(.*\.text_model\.encoder\.layers\.\d+)\.self_attn\.q_proj\.weight$")
_OPEN_CLIP = re.compile(r"^(.*\.transformer\.resblocks\.\d+)\.attn\.in_proj_weight$")


@dataclass(frozen=True)
class Slice:
    """A window of `size` indices along one axis of a tensor, starting at `start`."""

    key: str
    axis: int  # 0: rows (outputs), 1: columns (inputs)
    start: int


@dataclass(frozen=True)
class Group:
    name: str
    size: int
    slices: tuple[Slice, ...]
    layer: str  # the module the group lies in: its tensors are read once for all its groups

    @property
    def keys(self) -> list[str]:
        return list(dict.fromkeys(s.key for s in self.slices))


def unsupported(arch_id: str) -> UnsupportedError:
    return UnsupportedError(f"re-basin supports SD1, SD2 and SDXL, not {arch_id}")


def permutation_groups(shapes: Mapping[str, tuple[int, ...]], arch_id: str) -> list[Group]:
    """Every permutation group of a checkpoint of architecture `arch_id`, from its key shapes."""
    if arch_id not in SUPPORTED:
        raise unsupported(arch_id)
    groups: list[Group] = []
    groups += _hidden(shapes, UNET + "time_embed", ".0", ".2")
    groups += _hidden(shapes, UNET + "label_emb.0", ".0", ".2")
    for key in shapes:
        if m := _TRANSFORMER.match(key):
            groups += _transformer_block(shapes, m.group(1), _unet_heads(shapes, arch_id, key))
        elif m := _CLIP_L.match(key):
            groups += _clip_l_layer(shapes, m.group(1))
        elif m := _OPEN_CLIP.match(key):
            groups += _open_clip_layer(shapes, m.group(1), OPEN_CLIP_HEADS.get(arch_id, 0))
    _check_disjoint(groups)
    return groups


def _unet_heads(shapes: Mapping[str, tuple[int, ...]], arch_id: str, key: str) -> int:
    if arch_id == "sd1":
        return SD1_UNET_HEADS
    width = shapes[key][0]
    base = shapes.get(UNET + "time_embed.0.weight", (0, 0))[1]
    if not base or (width * UNET_HEAD_WIDTH_PER_BASE) % base:
        raise UnsupportedError(f"re-basin: the attention at {key} ({width} channels) does not split into heads")
    return width * UNET_HEAD_WIDTH_PER_BASE // base


def _need(shapes: Mapping[str, tuple[int, ...]], keys: list[str]) -> bool:
    return all(k in shapes for k in keys)


def _heads(
    name: str, layer: str, width: int, heads: int, rows: list[tuple[str, int]], columns: list[tuple[str, int]]
) -> list[Group]:
    """One group per head: rows (key, offset) and columns (key, offset) in the head's window."""
    if heads <= 0 or width % heads:
        raise UnsupportedError(f"re-basin: {layer} has {width} channels, which do not split into {heads} heads")
    d = width // heads
    return [
        Group(
            f"{layer}.{name}.{h}",
            d,
            tuple(Slice(k, 0, off + h * d) for k, off in rows) + tuple(Slice(k, 1, off + h * d) for k, off in columns),
            layer,
        )
        for h in range(heads)
    ]


def _transformer_block(shapes: Mapping[str, tuple[int, ...]], block: str, heads: int) -> list[Group]:
    groups: list[Group] = []
    for attn in ("attn1", "attn2"):
        p = f"{block}.{attn}."
        q, k, v, out = p + "to_q.weight", p + "to_k.weight", p + "to_v.weight", p + "to_out.0.weight"
        if not _need(shapes, [q, k, v, out]):
            continue
        width = shapes[q][0]
        groups += _heads(f"{attn}.qk", block, width, heads, [(q, 0), (k, 0)], [])
        groups += _heads(f"{attn}.vo", block, shapes[v][0], heads, [(v, 0)], [(out, 0)])
    w0, b0, w2 = block + ".ff.net.0.proj.weight", block + ".ff.net.0.proj.bias", block + ".ff.net.2.weight"
    if _need(shapes, [w0, b0, w2]):
        hidden = shapes[w2][1]  # GEGLU: ff.net.0 holds the value half and the gate half, H rows each
        slices = (Slice(w0, 0, 0), Slice(w0, 0, hidden), Slice(b0, 0, 0), Slice(b0, 0, hidden), Slice(w2, 1, 0))
        groups.append(Group(f"{block}.ff", hidden, slices, block))
    return groups


def _clip_l_layer(shapes: Mapping[str, tuple[int, ...]], layer: str) -> list[Group]:
    p = layer + ".self_attn."
    names = {n: p + f"{n}_proj" for n in ("q", "k", "v", "out")}
    groups: list[Group] = []
    if _need(shapes, [names[n] + s for n in "qkv" for s in (".weight", ".bias")] + [names["out"] + ".weight"]):
        width = shapes[names["q"] + ".weight"][0]
        qk = [(names[n] + s, 0) for n in "qk" for s in (".weight", ".bias")]
        vo_rows = [(names["v"] + ".weight", 0), (names["v"] + ".bias", 0)]
        groups += _heads("qk", layer, width, CLIP_L_HEADS, qk, [])
        groups += _heads("vo", layer, width, CLIP_L_HEADS, vo_rows, [(names["out"] + ".weight", 0)])
    groups += _hidden(shapes, layer + ".mlp", ".fc1", ".fc2")
    return groups


def _open_clip_layer(shapes: Mapping[str, tuple[int, ...]], layer: str, heads: int) -> list[Group]:
    w, b, out = layer + ".attn.in_proj_weight", layer + ".attn.in_proj_bias", layer + ".attn.out_proj.weight"
    groups: list[Group] = []
    if _need(shapes, [w, b, out]):
        width = shapes[w][0] // 3  # q, k and v stacked
        groups += _heads("qk", layer, width, heads, [(w, 0), (w, width), (b, 0), (b, width)], [])
        groups += _heads("vo", layer, width, heads, [(w, 2 * width), (b, 2 * width)], [(out, 0)])
    groups += _hidden(shapes, layer + ".mlp", ".c_fc", ".c_proj")
    return groups


def _hidden(shapes: Mapping[str, tuple[int, ...]], module: str, first: str, second: str) -> list[Group]:
    """The hidden units of a two-layer MLP with an elementwise activation between the layers."""
    w1, b1, w2 = module + first + ".weight", module + first + ".bias", module + second + ".weight"
    if not _need(shapes, [w1, b1, w2]):
        return []
    size = shapes[w1][0]
    return [Group(f"{module}.hidden", size, (Slice(w1, 0, 0), Slice(b1, 0, 0), Slice(w2, 1, 0)), module)]


def _check_disjoint(groups: list[Group]) -> None:
    """No index of any tensor axis may belong to two groups (a programming error if it does)."""
    taken: dict[tuple[str, int], list[tuple[int, int]]] = {}
    for g in groups:
        for s in g.slices:
            windows = taken.setdefault((s.key, s.axis), [])
            if any(s.start < end and start < s.start + g.size for start, end in windows):
                raise AssertionError(f"re-basin groups overlap at {s.key} axis {s.axis}")
            windows.append((s.start, s.start + g.size))
