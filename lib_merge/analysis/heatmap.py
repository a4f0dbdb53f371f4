"""The heatmap of an analysis: rows are blocks, columns the measures, each cell coloured by its similarity on
viridis (lib_merge/analysis/colormap.py) and labelled with its value, a colour bar with ticks beside it.

The colour scale is lib_merge/analysis/scale.py's: a log scale of 100 − similarity over this analysis's
range, so the 99.x % blocks of related models differ in colour; the colour bar prints the range.
"""

from __future__ import annotations

from dataclasses import dataclass

from PIL import Image, ImageDraw

from lib_merge.analysis.colormap import colour, colours, text_colour
from lib_merge.analysis.drawing import MUTED, PAD, Fonts, draw_title, line_height, put, title_height, title_width
from lib_merge.analysis.scale import SimilarityScale, tick_label
from lib_merge.analysis.similarity import BlockSimilarity, Similarity
from lib_merge.io.fonts import text_box

MEASURES = ("cosine mean", "cosine min", "cosine weighted", "attention")
MISSING = (235, 235, 235)  # a block without attention modules
BAR_GAP, BAR_WIDTH, TICK = 32, 26, 6


def measures(block: BlockSimilarity) -> list[float | None]:
    """The block's values in %, in MEASURES order (attention None when not computed or absent)."""
    return [block.cosine_mean * 100, block.cosine_min * 100, block.cosine_weighted * 100, block.attention]


@dataclass(frozen=True)
class HeatmapLayout:
    """Where everything goes; the tests read the cells and the colour bar from it."""

    columns: list[str]  # MEASURES, without attention when no block has it
    values: list[list[float | None]]  # per block, per column, in %
    scale: SimilarityScale
    left: int  # the grid's top left corner and cell size
    top: int
    cell_width: int
    cell_height: int
    bar: tuple[int, int, int, int]  # the colour bar's left, top, right, bottom (inclusive)
    size: tuple[int, int]

    def cell(self, row: int, column: int) -> tuple[int, int, int, int]:
        """Left, top, right, bottom (inclusive) of one cell's coloured area."""
        x, y = self.left + column * self.cell_width, self.top + row * self.cell_height
        return x, y, x + self.cell_width - 2, y + self.cell_height - 2

    def bar_y(self, similarity: float) -> float:
        """The colour bar's pixel row of a similarity (the most similar end at the top)."""
        _, top, _, bottom = self.bar
        return top + (1 - self.scale.position(similarity)) * (bottom - top)


def heatmap_layout(result: Similarity, fonts: Fonts) -> HeatmapLayout:
    draw = ImageDraw.Draw(Image.new("RGB", (8, 8)))
    every = [measures(b) for b in result.blocks]
    keep = [j for j in range(len(MEASURES)) if j < 3 or any(row[j] is not None for row in every)]
    columns = [MEASURES[j] for j in keep]
    values = [[row[j] for j in keep] for row in every]
    scale = SimilarityScale.of(v for row in values for v in row if v is not None)
    value_width = text_box(draw, "-100.000", fonts.value)[0]
    words = [w for c in columns for w in c.split(" ")]  # headers go on two lines: "cosine" over "weighted"
    cell_width = max([text_box(draw, w, fonts.label)[0] for w in words] + [value_width]) + 20
    cell_height = line_height(draw, fonts.label) + 14
    label_width = max([text_box(draw, b.slot, fonts.label)[0] for b in result.blocks] + [40]) + 20
    left = PAD + label_width
    top = title_height(draw, fonts) + 2 * line_height(draw, fonts.label) + 20
    rows_height = max(cell_height * len(result.blocks), 240)
    bar_left = left + cell_width * len(columns) + BAR_GAP
    bar = (bar_left, top, bar_left + BAR_WIDTH - 1, top + rows_height - 2)
    tick_width = max(text_box(draw, tick_label(s), fonts.small)[0] for s in scale.ticks(at_most=2 + rows_height // 40))
    width = max(bar[2] + TICK + 6 + tick_width + PAD, title_width(draw, fonts, heading(result)))
    height = top + rows_height + 12 + line_height(draw, fonts.small) + PAD
    return HeatmapLayout(columns, values, scale, left, top, cell_width, cell_height, bar, (width, height))


def heatmap(result: Similarity, font_path: str | None = None) -> Image.Image:
    """Blocks × measures coloured by similarity, with the values, a colour bar and its range, in the XYZ
    grids' font (`font_path`: the host's TrueType file, when it has one).

    Not a fixed 0…100 % scale: the colours follow log(100 − similarity) over this analysis's range, because
    related models are 99.x % alike almost everywhere and would all be one colour; the printed range on the
    colour bar says how far apart the colours are, and every cell carries its value."""
    fonts = Fonts.load(font_path)
    layout = heatmap_layout(result, fonts)
    image = Image.new("RGB", layout.size, "white")
    draw = ImageDraw.Draw(image)
    draw_title(draw, fonts, heading(result), "Similarity of each block, in %", layout.size[0])
    line = line_height(draw, fonts.label)
    for j, name in enumerate(layout.columns):
        for k, word in enumerate(reversed(name.split(" "))):
            y = layout.top - 8 - line / 2 - k * (line + 4)
            put(draw, layout.left + (j + 0.5) * layout.cell_width, y, word, fonts.label, align="center")
    decimals = layout.scale.decimals()
    for i, (block, row) in enumerate(zip(result.blocks, layout.values, strict=True)):
        x0, y0, _, y1 = layout.cell(i, 0)
        put(draw, x0 - 10, (y0 + y1) / 2, block.slot, fonts.label, align="right")
        for j, value in enumerate(row):
            box = layout.cell(i, j)
            fill = MISSING if value is None else colour(layout.scale.position(value))
            draw.rectangle(box, fill=fill)
            text = "-" if value is None else f"{value:.{decimals}f}"
            put(draw, (box[0] + box[2]) / 2, (box[1] + box[3]) / 2, text, fonts.value, text_colour(fill), "center")
    _colour_bar(image, draw, layout, fonts)
    return image


def _colour_bar(image: Image.Image, draw: ImageDraw.ImageDraw, layout: HeatmapLayout, fonts: Fonts) -> None:
    left, top, right, bottom = layout.bar
    height = bottom - top + 1
    ramp = colours([1 - y / (height - 1) for y in range(height)])
    image.paste(Image.fromarray(ramp[:, None, :].repeat(right - left + 1, axis=1)), (left, top))
    draw.rectangle((left - 1, top - 1, right + 1, bottom + 1), outline=MUTED)
    for similarity in layout.scale.ticks(at_most=2 + height // 40):
        y = round(layout.bar_y(similarity))
        draw.line((right + 1, y, right + TICK, y), fill=MUTED)
        put(draw, right + TICK + 6, y, tick_label(similarity), fonts.small)
    low, high = tick_label(100 - layout.scale.high), tick_label(100 - layout.scale.low)
    note = f"Colours: log scale of 100 - similarity, from {low} % (dark) to {high} % (yellow)"
    put(draw, PAD, layout.size[1] - PAD - line_height(draw, fonts.small) / 2, note, fonts.small, fill=MUTED)


def heading(result: Similarity) -> str:
    return f"{result.a} vs {result.b}"
