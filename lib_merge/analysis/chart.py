"""The bar chart of an analysis: one horizontal bar per block, as long as the block's distance from
identical, 100 − cosine mean (in %), on a linear axis from 0.

The distance and not the similarity: related models are 99.x % alike everywhere, and bars of 99.9 and
99.5 % look the same while bars of 0.1 and 0.5 show at once which blocks changed. Bars start at zero, so
their lengths compare truthfully.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from PIL import Image, ImageDraw

from lib_merge.analysis.colormap import VIRIDIS
from lib_merge.analysis.drawing import MUTED, PAD, Fonts, draw_title, line_height, put, title_height, title_width
from lib_merge.analysis.heatmap import heading
from lib_merge.analysis.scale import axis_label, axis_ticks
from lib_merge.analysis.similarity import BlockSimilarity, Similarity
from lib_merge.io.fonts import text_box

BAR = VIRIDIS[5]  # the ramp's blue (#33638d): dark enough on white
GRID = (225, 225, 225)
PLOT_WIDTH = 420


def block_distance(block: BlockSimilarity) -> float:
    """100 − cosine mean, in %, never below 0 (rounding can lift a cosine a hair above 1)."""
    return max(100.0 - block.cosine_mean * 100, 0.0)


def value_label(distance: float) -> str:
    """Three significant digits at most (0.00712, 0.48, 12.3, 7), whole numbers from 100 on."""
    digits = max(0, 2 - math.floor(math.log10(distance))) if distance > 0 else 0
    text = f"{distance:.{digits}f}"
    return text.rstrip("0").rstrip(".") if "." in text else text


@dataclass(frozen=True)
class ChartLayout:
    """Where everything goes; the tests measure the bars with it."""

    distances: list[float]
    ticks: list[float]  # axis ticks, 0 … the axis end
    left: int  # x of the axis' zero
    top: int
    row_height: int
    plot_width: int  # pixels from 0 to the last tick
    size: tuple[int, int]

    def bar(self, row: int, distance: float) -> tuple[int, int, int, int]:
        """Left, top, right, bottom (inclusive) of a bar: one pixel at least for a distance above 0, none
        (right < left) for identical blocks."""
        y = self.top + row * self.row_height + 4
        length = round(distance / self.ticks[-1] * self.plot_width)
        length = max(length, 1) if distance > 0 else 0
        return self.left, y, self.left + length - 1, y + self.row_height - 9

    @property
    def axis_y(self) -> int:
        return self.top + len(self.distances) * self.row_height + 2


def chart_layout(result: Similarity, fonts: Fonts) -> ChartLayout:
    draw = ImageDraw.Draw(Image.new("RGB", (8, 8)))
    distances = [block_distance(b) for b in result.blocks]
    ticks = axis_ticks(max(distances, default=0.0))
    label_width = max([text_box(draw, b.slot, fonts.label)[0] for b in result.blocks] + [40]) + 20
    value_width = max([text_box(draw, value_label(d), fonts.value)[0] for d in distances] + [0])
    row_height = line_height(draw, fonts.label) + 14
    top = title_height(draw, fonts) + 8
    width = max(PAD + label_width + PLOT_WIDTH + 8 + value_width + PAD, title_width(draw, fonts, heading(result)))
    height = top + len(distances) * row_height + 2 + 8 + 2 * line_height(draw, fonts.small) + 18 + PAD
    return ChartLayout(distances, ticks, PAD + label_width, top, row_height, PLOT_WIDTH, (width, height))


def bar_chart(result: Similarity, font_path: str | None = None) -> Image.Image:
    """Per block, how far B is from A (100 − cosine mean, %), as bars labelled with their values, in the
    XYZ grids' font (`font_path`: the host's TrueType file, when it has one)."""
    fonts = Fonts.load(font_path)
    layout = chart_layout(result, fonts)
    image = Image.new("RGB", layout.size, "white")
    draw = ImageDraw.Draw(image)
    subtitle = "How far each block is from identical: 100 - cosine mean, in %"
    draw_title(draw, fonts, heading(result), subtitle, layout.size[0])
    step = layout.ticks[1] - layout.ticks[0]
    bottom = layout.axis_y
    for tick in layout.ticks:
        x = layout.left + round(tick / layout.ticks[-1] * layout.plot_width)
        draw.line((x, layout.top, x, bottom), fill=GRID)
        draw.line((x, bottom, x, bottom + 6), fill=MUTED)
        put(draw, x, bottom + 8 + line_height(draw, fonts.small) / 2, axis_label(tick, step), fonts.small,
            align="center")  # fmt: skip
    for i, (block, distance) in enumerate(zip(result.blocks, layout.distances, strict=True)):
        x0, y0, x1, y1 = layout.bar(i, distance)
        put(draw, x0 - 10, (y0 + y1) / 2, block.slot, fonts.label, align="right")
        if x1 >= x0:
            draw.rectangle((x0, y0, x1, y1), fill=BAR)
        put(draw, max(x1, x0) + 8, (y0 + y1) / 2, value_label(distance), fonts.value)
    draw.line((layout.left - 1, layout.top, layout.left - 1, bottom), fill=MUTED)  # left of the bars, not on them
    draw.line((layout.left - 1, bottom, layout.left + layout.plot_width, bottom), fill=MUTED)
    caption_y = bottom + 8 + line_height(draw, fonts.small) + 10 + line_height(draw, fonts.small) / 2
    put(draw, layout.left + layout.plot_width / 2, caption_y, "100 - cosine mean (%)", fonts.small, MUTED, "center")
    return image
