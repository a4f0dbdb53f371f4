"""The one font lookup for every picture Alloy draws (XYZ grids, the analysis heatmap and bar chart).

Labels should be TrueType at a size people read, on every Pillow the hosts bring: the host's own font
(the WebUI's Roboto), else Pillow's built-in scalable font (Pillow >= 10.1), else DejaVu Sans where the
system has it (Pillow 9.5, which AUTOMATIC1111 pins, has no scalable font of its own), and only then
Pillow's fixed bitmap font.
"""

from __future__ import annotations

from collections.abc import Callable

from PIL import ImageDraw, ImageFont

Font = ImageFont.FreeTypeFont | ImageFont.ImageFont
SYSTEM_FONT = "DejaVuSans.ttf"  # found by Pillow in the system's font folders


def load_font(size: int, path: str | None = None) -> Font:
    """A font `size` pixels high: the TrueType file at `path` when given and readable, else the fallbacks above."""
    attempts: list[Callable[[], Font]] = []
    if path:
        attempts.append(lambda: ImageFont.truetype(path, size))
    attempts.append(lambda: ImageFont.load_default(size=size))
    attempts.append(lambda: ImageFont.truetype(SYSTEM_FONT, size))
    for attempt in attempts:
        try:
            return attempt()
        except (OSError, ImportError, TypeError):  # no file, no FreeType, Pillow < 10.1's load_default
            continue
    return ImageFont.load_default()


def is_scalable(font: Font) -> bool:
    return isinstance(font, ImageFont.FreeTypeFont)


def drawable(text: str, font: Font) -> str:
    """`text` as `font` can draw it: the bitmap font knows Latin-1 only, other characters become "?"."""
    return text if is_scalable(font) else text.encode("latin-1", "replace").decode("latin-1")


def text_box(draw: ImageDraw.ImageDraw, text: str, font: Font) -> tuple[int, int]:
    """Width and height in pixels of one line of `text` drawn at the origin (0, 0 for no text)."""
    if not text:
        return 0, 0
    left, top, right, bottom = draw.textbbox((0, 0), drawable(text, font), font=font)
    return right - left, bottom - top
