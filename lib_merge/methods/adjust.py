"""Adjust: detail and colour as a post-op on six UNet keys of the merged model."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Annotated

import torch

from lib_merge.errors import BlockSchemaError, ParameterError
from lib_merge.methods.registry import TEXT, merge_method

PREFIX = "model.diffusion_model."
COLOUR = {
    "sd1": ((-1, 1 / 3, 2 / 3), (1, 1, 0), (0, -1, -1), (1, 0, 1)),
    "sdxl": ((0, 0, 1), (1, 0, 0), (-1, -1, 0), (-1, 1, 0)),
}
COLOUR["sd2"] = COLOUR["sd1"]
NAMES = ("IN", "OUT", "OUT2", "CONT", "BRI", "COL1", "COL2", "COL3")


@dataclass(frozen=True)
class AdjustValues:
    numbers: tuple[float, ...]  # the eight values
    matrix: str | None = None  # the architecture's colour matrix, set when bound

    @property
    def text(self) -> str:
        return ",".join(repr(float(x)) if x else "0" for x in self.numbers)

    @classmethod
    def from_text(cls, text: str) -> AdjustValues:
        return parse_adjust(text)

    def bind(self, arch_id: str | None) -> AdjustValues:
        family = (arch_id or "").split("_")[0]
        if family not in COLOUR:
            raise BlockSchemaError("Adjust is defined for SD1/SD2/SDXL only")
        return AdjustValues(self.numbers, family)


def parse_adjust(text: str) -> AdjustValues:
    items = [t.strip() for t in str(text).split(",")] if str(text).strip() else []
    if len(items) > 8:
        raise ParameterError(f"adjust takes 8 numbers ({','.join(NAMES)}), got {len(items)}")
    numbers = []
    for name, item in zip(NAMES, items, strict=False):
        try:
            numbers.append(float(item) if item else 0.0)
        except ValueError:
            raise ParameterError(f"adjust: {name} is {item!r}, not a number") from None
    return AdjustValues(tuple(numbers + [0.0] * (8 - len(numbers))))


def touches(key: str) -> bool:
    return key.removeprefix(PREFIX) in (
        "input_blocks.0.0.weight",
        "input_blocks.0.0.bias",
        "out.0.weight",
        "out.0.bias",
        "out.2.weight",
        "out.2.bias",
    ) and key.startswith(PREFIX)


def _unchanged(params: dict) -> int | None:
    return 0 if not any(params["values"].numbers) else None


def _untouched(key: str) -> bool:
    return not touches(key)


@merge_method("Adjust", "op", passthrough=_unchanged, keeps_key=_untouched)
def adjust(
    x: torch.Tensor, *, values: Annotated[AdjustValues, TEXT] = AdjustValues((0.0,) * 8), key: str
) -> torch.Tensor:
    inp, out, out2, cont, bri, c1, c2, c3 = values.numbers
    name = key.removeprefix(PREFIX)
    factors = {
        "input_blocks.0.0.weight": 1 - 0.01 * inp,
        "input_blocks.0.0.bias": 1 + 0.02 * inp,
        "out.0.weight": 1 - 0.01 * out,
        "out.0.bias": 1 + 0.02 * out,
        "out.2.weight": 1 - 0.01 * out2,
    }
    if name in factors:
        return x.mul_(factors[name])
    m = COLOUR[values.matrix]
    colour = [0.02 * (bri * m[0][i] + c1 * m[1][i] + c2 * m[2][i] + c3 * m[3][i]) for i in range(3)]
    shift = torch.tensor([0.02 * cont, *colour], dtype=x.dtype, device=x.device)
    return x.add_(shift[: x.shape[0]]) if x.dim() == 1 else x
