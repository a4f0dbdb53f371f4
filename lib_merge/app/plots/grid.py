"""Grid images with labels, drawn with PIL; the effective-elemental checker's diffs.

X labels on top, Y labels on the left, the swept formula in the corner. Unfinished cells are grey
tiles labelled "stopped". The font is the host's when it has one (lib_merge/io/fonts.py has the fallbacks).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw, PngImagePlugin

from lib_merge.errors import OutputExistsError
from lib_merge.io.fonts import load_font
from lib_merge.io.tempfiles import write_file

BACKGROUND = "white"
EMPTY_TILE = (200, 200, 200)


@dataclass
class GridLabels:
    x: list[str]
    y: list[str]
    corner: str = ""  # the formula, swept parameters shown as X / Y


def _text_size(draw: ImageDraw.ImageDraw, text: str, font) -> tuple[int, int]:
    if not text:
        return 0, 0
    left, top, right, bottom = draw.multiline_textbbox((0, 0), text, font=font, spacing=2)
    return right - left, bottom - top


def _wrap(draw: ImageDraw.ImageDraw, text: str, font, width: int) -> str:
    """Each line broken at spaces (or anywhere, for long words) so it fits `width` pixels."""
    out: list[str] = []
    for line in text.split("\n"):
        current = ""
        for word in line.split(" "):
            candidate = f"{current} {word}" if current else word
            if _text_size(draw, candidate, font)[0] <= width or not current:
                current = candidate
            else:
                out.append(current)
                current = word
            while _text_size(draw, current, font)[0] > width and len(current) > 1:
                cut = len(current) - 1
                while cut > 1 and _text_size(draw, current[:cut], font)[0] > width:
                    cut -= 1
                out.append(current[:cut])
                current = current[cut:]
        out.append(current)
    return "\n".join(out)


def _fit(labels: list[str], width: int, size: int, font_path: str | None, scratch) -> tuple[list[str], object]:
    """Labels wrapped to `width`, with the font shrunk until no label needs more than 4 lines."""
    while True:
        font = load_font(size, font_path)
        wrapped = [_wrap(scratch, t, font, width) for t in labels]
        if size <= 8 or all(w.count("\n") < 4 for w in wrapped):
            return wrapped, font
        size -= 2


def draw_grid(tiles: list[list[Image.Image | None]], labels: GridLabels, font_path: str | None = None) -> Image.Image:
    """`tiles[row][col]`; None draws an empty tile labelled "stopped"."""
    first = next((t for row in tiles for t in row if t is not None), None)
    w, h = first.size if first is not None else (256, 256)
    rows, cols = len(tiles), max(len(r) for r in tiles)  # a short last row leaves its end blank
    size = max(10, (w + h) // 25)
    scratch = ImageDraw.Draw(Image.new("RGB", (8, 8)))
    x_text, x_font = _fit(labels.x, w - 8, size, font_path, scratch)
    left_width = w if any(labels.y) else 0
    y_text, y_font = _fit(labels.y, max(left_width - 8, 16), size, font_path, scratch)
    corner_text, corner_font = _fit([labels.corner], max(left_width - 8, w - 8), size, font_path, scratch)
    top = max([_text_size(scratch, t, x_font)[1] for t in x_text] + [0]) + 16 if any(labels.x) else 0
    top = max(top, _text_size(scratch, corner_text[0], corner_font)[1] + 16 if left_width else top)
    if left_width:
        left_width = max(_text_size(scratch, t, y_font)[0] for t in y_text + corner_text) + 16
    grid = Image.new("RGB", (left_width + cols * w, top + rows * h), BACKGROUND)
    draw = ImageDraw.Draw(grid)
    stopped_font = load_font(max(10, size), font_path)
    for r, row in enumerate(tiles):
        for c, tile in enumerate(row):
            x0, y0 = left_width + c * w, top + r * h
            if tile is None:
                draw.rectangle([x0, y0, x0 + w - 1, y0 + h - 1], fill=EMPTY_TILE)
                tw, th = _text_size(draw, "stopped", stopped_font)
                draw.text((x0 + (w - tw) / 2, y0 + (h - th) / 2), "stopped", fill="black", font=stopped_font)
            else:
                grid.paste(tile.convert("RGB").resize((w, h)) if tile.size != (w, h) else tile.convert("RGB"), (x0, y0))
    style = {"fill": "black", "align": "center", "spacing": 2}
    for c, text in enumerate(x_text):
        tw, th = _text_size(draw, text, x_font)
        draw.multiline_text((left_width + c * w + (w - tw) / 2, (top - th) / 2), text, font=x_font, **style)
    for r, text in enumerate(y_text):
        tw, th = _text_size(draw, text, y_font)
        draw.multiline_text(((left_width - tw) / 2, top + r * h + (h - th) / 2), text, font=y_font, **style)
    if left_width and corner_text[0]:
        tw, th = _text_size(draw, corner_text[0], corner_font)
        draw.multiline_text(((left_width - tw) / 2, (top - th) / 2), corner_text[0], fill="black", font=corner_font)
    return grid


def pixel_diff_percent(image: Image.Image, baseline: Image.Image) -> float:
    """Share of pixels whose absolute difference exceeds 20 in any RGB channel, in percent."""
    a = np.asarray(image.convert("RGB"), dtype=np.int16)
    b = np.asarray(baseline.convert("RGB").resize(image.size), dtype=np.int16)
    changed = (np.abs(a - b) > 20).any(axis=-1)
    return float(changed.mean() * 100)


def next_grid_path(folder: Path) -> Path:
    """`alloy_xyz-<NNNNN>.png`, one above the highest number in the folder."""
    folder.mkdir(parents=True, exist_ok=True)
    numbers = [int(p.stem.split("-")[-1]) for p in folder.glob("alloy_xyz-*.png") if p.stem.split("-")[-1].isdigit()]
    return folder / f"alloy_xyz-{max(numbers, default=0) + 1:05d}.png"


def save_grid(image: Image.Image, folder: Path, plan: dict) -> Path:
    """The grid with the plan as PNG infotext, under the next free number (never over another grid)."""
    info = PngImagePlugin.PngInfo()
    info.add_text("parameters", "Alloy XYZ plan: " + json.dumps(plan, sort_keys=True))
    while True:
        path = next_grid_path(folder)
        try:
            write_file(str(path), lambda f: image.save(f, format="PNG", pnginfo=info), overwrite=False)
        except OutputExistsError:  # another plot took this number a moment ago
            continue
        return path
