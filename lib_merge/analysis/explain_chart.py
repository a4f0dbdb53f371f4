"""The chart of an explained merge: one horizontal bar per block, as long as its fitted alpha, coloured by
the share of M's change the fit explains there.

The axis always spans 0…1 (a weighted sum's usual range) and widens to take alphas outside it, so two
charts read alike; bars start at 0, so a negative alpha points left.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from PIL import Image, ImageDraw

from lib_merge.analysis.explain import THRESHOLD, Explanation, percent
from lib_merge.io.fonts import Font, drawable, load_font, text_box

INK, MUTED, GRID = (30, 30, 30), (100, 100, 100), (225, 225, 225)
GOOD, FAIR, POOR = (46, 139, 87), (230, 150, 30), (200, 50, 50)  # explained ≥ THRESHOLD, ≥ 0.5, below
PAD, PLOT_WIDTH = 16, 440


def colour(explained: float) -> tuple[int, int, int]:
    return GOOD if explained >= THRESHOLD else FAIR if explained >= 0.5 else POOR


def axis(alphas: list[float]) -> tuple[float, float, float]:
    """(low, high, tick step): 0…1 widened to whole ticks around every alpha."""
    low, high = min([0.0, *alphas]), max([1.0, *alphas])
    step = 0.25 if high - low <= 2 else 10 ** math.floor(math.log10(high - low))
    return math.floor(low / step) * step, math.ceil(high / step) * step, step


@dataclass(frozen=True)
class Layout:
    low: float
    high: float
    step: float
    left: int  # x of `low`
    top: int  # y of the first row
    row: int  # row height

    def x(self, value: float) -> int:
        return self.left + round((value - self.low) / (self.high - self.low) * PLOT_WIDTH)


def _fonts(path: str | None) -> tuple[Font, Font, Font]:
    return load_font(20, path), load_font(16, path), load_font(14, path)  # title, labels and values, notes


def _put(draw: ImageDraw.ImageDraw, xy: tuple[float, float], text: str, font: Font, fill=INK, anchor="l") -> None:
    """Text vertically centred on y; `anchor` l, m or r places its left, middle or right end at x."""
    text = drawable(text, font)
    width, height = text_box(draw, text, font)
    left, top, _, _ = draw.textbbox((0, 0), text, font=font)
    dx = {"l": 0, "m": width / 2, "r": width}[anchor]
    draw.text((round(xy[0] - dx - left), round(xy[1] - height / 2 - top)), text, font=font, fill=fill)


def chart(explanation: Explanation, font_path: str | None = None) -> Image.Image:
    """Alpha per block as bars labelled with their values, the share explained in the subtitle; in the host's
    TrueType font at `font_path` when it has one (lib_merge/io/fonts.py)."""
    title_font, label_font, small_font = _fonts(font_path)
    probe = ImageDraw.Draw(Image.new("RGB", (8, 8)))
    blocks = explanation.blocks
    low, high, step = axis([b.alpha for b in blocks])
    label_w = max([text_box(probe, b.block, label_font)[0] for b in blocks] + [40]) + 14
    line = text_box(probe, "Ag0", label_font)[1]
    layout = Layout(low, high, step, PAD + label_w, PAD + 3 * (line + 10), line + 12)
    width = layout.left + PLOT_WIDTH + 150
    axis_y = layout.top + len(blocks) * layout.row + 4
    image = Image.new("RGB", (max(width, 640), axis_y + 3 * (line + 8) + PAD), "white")
    draw = ImageDraw.Draw(image)
    parents = f"A={explanation.a}, B={explanation.b}" + (f", C={explanation.c}" if explanation.c else "")
    _put(draw, (PAD, PAD + line / 2), f"{explanation.m}: {explanation.mode.replace('_', ' ')}", title_font)
    _put(draw, (PAD, PAD + 1.5 * line + 8), parents[:120], small_font, MUTED)
    found = "" if explanation.is_merge else ": M is no such merge"
    _put(draw, (PAD, PAD + 2.5 * line + 16), f"alpha per block; the fit explains {percent(explanation.explained)} "
         f"of M's change from A{found}", small_font, MUTED)  # fmt: skip
    for i in range(round((high - low) / step) + 1):
        tick = low + i * step
        x = layout.x(tick)
        draw.line((x, layout.top, x, axis_y), fill=MUTED if abs(tick) < 1e-12 else GRID)
        _put(draw, (x, axis_y + line / 2 + 6), f"{tick:g}", small_font, MUTED, "m")
    zero = layout.x(0.0)
    for i, fit in enumerate(blocks):
        y0 = layout.top + i * layout.row + 4
        y1 = y0 + layout.row - 8
        _put(draw, (layout.left - 10, (y0 + y1) / 2), fit.block, label_font, anchor="r")
        end = layout.x(fit.alpha)
        if end != zero:
            draw.rectangle((min(zero, end), y0, max(zero, end), y1), fill=colour(fit.explained))
        _put(draw, (max(zero, end) + 8, (y0 + y1) / 2), f"{fit.alpha:.3f}", small_font)
    legend_y = axis_y + 2 * line + 18
    x = PAD
    for fill, text in ((GOOD, f"explained >= {THRESHOLD:.0%}"), (FAIR, ">= 50%"), (POOR, "< 50%")):
        draw.rectangle((x, legend_y - 6, x + 12, legend_y + 6), fill=fill)
        _put(draw, (x + 18, legend_y), text, small_font, MUTED)
        x += 18 + text_box(draw, text, small_font)[0] + 24
    return image
