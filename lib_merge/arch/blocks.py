"""Block schemas: the one list of blocks per architecture.

MBW vectors, presets and (later) elemental rules, XYZ pinpoint axes, include/exclude and
Dice all ask the schema object; no other block list exists in the code base.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass

from lib_merge.arch.registry import UNET

VAE_PREFIX = "first_stage_model."
VAE_SLOT = "VAE"

_NUMBERED = re.compile(r"([A-Z]+)(\d+)")
_INPUT = re.compile(re.escape(UNET) + r"input_blocks\.(\d+)\.")
_OUTPUT = re.compile(re.escape(UNET) + r"output_blocks\.(\d+)\.")


@dataclass(frozen=True)
class BlockSchema:
    id: str
    label: str
    slots: tuple[str, ...]
    slot_of: Callable[[str], str | None]  # key -> slot name, VAE_SLOT, or None (not in a block)
    fine: str | None = None  # id of a finer schema of the same architecture (SDXL's 110 slots)
    vae_keeps_a: bool = False  # the VAE keeps A unless a vector sets its slot (Flux, SD3)

    def __len__(self) -> int:
        return len(self.slots)

    def index(self, slot: str) -> int:
        return self.slots.index(slot)

    def resolve(self, name: str) -> str | None:
        """The slot a typed name means: itself, or its number padded as the slots write it ("D0" is D00)."""
        if name in self.slots:
            return name
        m = _NUMBERED.fullmatch(name)
        if m:
            for slot in self.slots:
                s = _NUMBERED.fullmatch(slot)
                if s and s.group(1) == m.group(1) and int(s.group(2)) == int(m.group(2)):
                    return slot
        return None

    def describe(self) -> str:
        """Slot names grouped by prefix: 'BASE, IN00…IN11, M00, OUT00…OUT11'."""
        groups: list[list[str]] = []
        for slot in self.slots:
            prefix = slot.rstrip("0123456789")
            if groups and groups[-1][0].rstrip("0123456789") == prefix:
                groups[-1].append(slot)
            else:
                groups.append([slot])
        return ", ".join(g[0] if len(g) == 1 else f"{g[0]}…{g[-1]}" for g in groups)

    def names_with_vae(self) -> tuple[str, ...]:
        return self.slots + (VAE_SLOT,)


def _sd1_slot(key: str) -> str | None:
    if key.startswith(UNET):
        if key.startswith(UNET + "time_embed."):
            return "IN00"
        if key.startswith(UNET + "out."):
            return "OUT11"
        if key.startswith(UNET + "middle_block."):
            return "M00"
        m = _INPUT.match(key) or _OUTPUT.match(key)
        if m and int(m.group(1)) <= 11:
            return ("IN" if m.re is _INPUT else "OUT") + f"{int(m.group(1)):02d}"
        return None
    if key.startswith(VAE_PREFIX):
        return VAE_SLOT
    return "BASE"


def _sdxl_slot(key: str) -> str | None:
    if key.startswith(UNET):
        if key.startswith((UNET + "time_embed.", UNET + "label_emb.")):
            return "IN00"
        if key.startswith(UNET + "out."):
            return "OUT08"
        if key.startswith(UNET + "middle_block."):
            return "M00"
        m = _INPUT.match(key) or _OUTPUT.match(key)
        if m and int(m.group(1)) <= 8:
            return ("IN" if m.re is _INPUT else "OUT") + f"{int(m.group(1)):02d}"
        return None
    if key.startswith(VAE_PREFIX):
        return VAE_SLOT
    return "BASE"


_FINE = re.compile(re.escape(UNET) + r"(input_blocks|middle_block|output_blocks)\.(?:(\d+)\.)?(\d+)\.(.*)")
_TRANSFORMER = re.compile(r"transformer_blocks\.(\d+)\.")


def _sdxl_fine_slot(key: str) -> str | None:
    """Fine slot names: IN{N}{S}{T}, MID{S}0{T}, OUT{N}{S}{T}; TIME, LABEL, OUT9, CLIPL, CLIPG, VAE."""
    if key.startswith(VAE_PREFIX):
        return VAE_SLOT
    if key.startswith("conditioner.embedders.0."):
        return "CLIPL"
    if key.startswith("conditioner.embedders.1."):
        return "CLIPG"
    if not key.startswith(UNET):
        return None
    rest = key[len(UNET) :]
    for prefix, slot in (("time_embed.", "TIME"), ("label_emb.", "LABEL"), ("out.", "OUT9")):
        if rest.startswith(prefix):
            return slot
    m = _FINE.match(key)
    if not m:
        return None
    part, block, sub, tail = m.groups()
    t = _TRANSFORMER.match(tail)
    tblock = t.group(1) if t else ""
    if part == "middle_block":
        return f"MID{block or sub}0{tblock}" if block is None else None
    name = f"{'IN' if part == 'input_blocks' else 'OUT'}{block}{sub}{tblock}"
    return name


def _sdxl_fine_names() -> tuple[str, ...]:
    names = ["CLIPL", "CLIPG", "IN0", "IN00", "IN10", "IN20", "IN30"]
    for n in (4, 5):
        names += [f"IN{n}0", f"IN{n}1", f"IN{n}10", f"IN{n}11"]
    names.append("IN60")
    for n in (7, 8):
        names += [f"IN{n}0", f"IN{n}1"] + [f"IN{n}1{t}" for t in range(10)]
    names += ["MID00", "MID10"] + [f"MID10{t}" for t in range(10)] + ["MID20"]
    for n in (0, 1, 2):
        names += [f"OUT{n}0", f"OUT{n}1"] + [f"OUT{n}1{t}" for t in range(10)]
    names.append("OUT22")
    for n in (3, 4, 5):
        names += [f"OUT{n}0", f"OUT{n}1", f"OUT{n}10", f"OUT{n}11"]
    names += ["OUT52", "OUT60", "OUT70", "OUT80", "OUT9", "TIME", "LABEL"]
    return tuple(names)  # 109 slots; the VAE is the 110th value


_FLUX_IN = ("img_in.", "txt_in.", "time_in.", "vector_in.", "guidance_in.", "distilled_guidance_layer.")
_FLUX_BLOCK = re.compile(re.escape(UNET) + r"(double|single)_blocks\.(\d+)\.")


def _flux_slot(key: str) -> str | None:
    """CLIP, T5, IN, D00…D18, S00…S37, OUT, VAE; other keys are outside the schema."""
    if key.startswith("text_encoders.clip_l."):
        return "CLIP"
    if key.startswith("text_encoders.t5xxl."):
        return "T5"
    if key.startswith("vae."):
        return VAE_SLOT
    if not key.startswith(UNET):
        return None
    rest = key[len(UNET) :]
    if rest.startswith(_FLUX_IN):
        return "IN"
    if rest.startswith("final_layer."):
        return "OUT"
    m = _FLUX_BLOCK.match(key)
    if m:
        return f"{'D' if m.group(1) == 'double' else 'S'}{int(m.group(2)):02d}"
    return None


_SD3_IN = ("x_embedder.", "context_embedder.", "t_embedder.", "y_embedder.", "pos_embed")
_JOINT = re.compile(re.escape(UNET) + r"joint_blocks\.(\d+)\.")
_SD3_ENCODERS = {"text_encoders.clip_l.": "CLIPL", "text_encoders.clip_g.": "CLIPG", "text_encoders.t5xxl.": "T5"}


def _sd3_slot(key: str) -> str | None:
    """CLIPL, CLIPG, T5, IN (the embedders), J00…, OUT, VAE; other keys are outside the schema."""
    for prefix, slot in _SD3_ENCODERS.items():
        if key.startswith(prefix):
            return slot
    if key.startswith(VAE_PREFIX):
        return VAE_SLOT
    if not key.startswith(UNET):
        return None
    rest = key[len(UNET) :]
    if rest.startswith(_SD3_IN):
        return "IN"
    if rest.startswith("final_layer."):
        return "OUT"
    m = _JOINT.match(key)
    return f"J{int(m.group(1)):02d}" if m else None


def _names(prefix: str, count: int) -> tuple[str, ...]:
    return tuple(f"{prefix}{i:02d}" for i in range(count))


SCHEMAS: dict[str, BlockSchema] = {
    "sd1": BlockSchema("sd1", "SD1", ("BASE",) + _names("IN", 12) + ("M00",) + _names("OUT", 12), _sd1_slot),
    "sdxl": BlockSchema(
        "sdxl", "SDXL", ("BASE",) + _names("IN", 9) + ("M00",) + _names("OUT", 9), _sdxl_slot, fine="sdxl_ext"
    ),
    "sdxl_ext": BlockSchema("sdxl_ext", "extended SDXL", _sdxl_fine_names(), _sdxl_fine_slot),
    "flux": BlockSchema(
        "flux",
        "Flux",
        ("CLIP", "T5", "IN") + _names("D", 19) + _names("S", 38) + ("OUT",),
        _flux_slot,
        vae_keeps_a=True,
    ),
    "sd3": BlockSchema(
        "sd3", "SD3", ("CLIPL", "CLIPG", "T5", "IN") + _names("J", 24) + ("OUT",), _sd3_slot, vae_keeps_a=True
    ),
    "sd35_large": BlockSchema(
        "sd35_large",
        "SD3.5 large",
        ("CLIPL", "CLIPG", "T5", "IN") + _names("J", 38) + ("OUT",),
        _sd3_slot,
        vae_keeps_a=True,
    ),
}


def schema_for(arch_id: str) -> BlockSchema | None:
    from lib_merge.arch.registry import ARCHITECTURES

    arch = ARCHITECTURES.get(arch_id)
    return SCHEMAS[arch.schema_id] if arch and arch.schema_id else None
