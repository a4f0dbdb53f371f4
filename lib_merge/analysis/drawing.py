"""What the analysis pictures share: their fonts at sizes people read, text placed by its ink, the title."""

from __future__ import annotations

from dataclasses import dataclass

from PIL import ImageDraw

from lib_merge.io.fonts import Font, drawable, load_font, text_box

INK = (30, 30, 30)
MUTED = (90, 90, 90)
PAD = 16


@dataclass(frozen=True)
class Fonts:
    title: Font
    label: Font  # block names, measure names
    value: Font  # numbers in cells and at bars
    small: Font  # subtitles, ticks, notes

    @classmethod
    def load(cls, path: str | None = None) -> Fonts:
        """The XYZ grids' font (the host's TrueType file at `path`, else lib_merge/io/fonts.py's fallbacks)."""
        return cls(load_font(22, path), load_font(18, path), load_font(17, path), load_font(15, path))


def put(draw: ImageDraw.ImageDraw, x: float, y: float, text: str, font: Font, fill=INK, align: str = "left") -> None:
    """One line of text whose digits are vertically centred on `y`; `x` is its left, centre or right end.

    Placed by ink, not by the font's line box, so every font (and Pillow's bitmap one) lines up the same."""
    text = drawable(text, font)
    left, _, right, _ = draw.textbbox((0, 0), text, font=font)
    _, top, _, bottom = draw.textbbox((0, 0), "0", font=font)
    dx = {"left": -left, "center": -(left + right) / 2, "right": -right}[align]
    draw.text((round(x + dx), round(y - (top + bottom) / 2)), text, font=font, fill=fill)


def fit(draw: ImageDraw.ImageDraw, text: str, font: Font, width: int) -> str:
    """`text`, cut short with "..." when it is wider than `width` pixels."""
    if text_box(draw, text, font)[0] <= width:
        return text
    while len(text) > 1 and text_box(draw, text + "...", font)[0] > width:
        text = text[:-1]
    return text + "..."


def line_height(draw: ImageDraw.ImageDraw, font: Font) -> int:
    """Height of a line holding capitals, digits and descenders."""
    return text_box(draw, "Ag0|", font)[1]


def title_height(draw: ImageDraw.ImageDraw, fonts: Fonts) -> int:
    return PAD + line_height(draw, fonts.title) + 10 + line_height(draw, fonts.small) + PAD


def title_width(draw: ImageDraw.ImageDraw, fonts: Fonts, title: str) -> int:
    """Room for the title, between 560 and 760 pixels (a longer one is cut short): the Analysis tab shows
    two pictures side by side, and a wider one is shrunk until its labels are too small to read."""
    return min(max(text_box(draw, title, fonts.title)[0] + 2 * PAD, 560), 760)


def draw_title(draw: ImageDraw.ImageDraw, fonts: Fonts, title: str, subtitle: str, width: int) -> None:
    """The models compared, and one line saying how to read the picture."""
    y = PAD + line_height(draw, fonts.title) / 2
    put(draw, PAD, y, fit(draw, title, fonts.title, width - 2 * PAD), fonts.title)
    y += line_height(draw, fonts.title) / 2 + 10 + line_height(draw, fonts.small) / 2
    put(draw, PAD, y, fit(draw, subtitle, fonts.small, width - 2 * PAD), fonts.small, fill=MUTED)
