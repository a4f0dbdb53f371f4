"""An analysis as a table, a CSV and a heatmap image (blocks × metrics, fixed 0…100 % colour scale)."""

from __future__ import annotations

import csv
import io

from PIL import Image, ImageDraw, ImageFont

from lib_merge.analysis.similarity import BlockSimilarity, Similarity
from lib_merge.io.tempfiles import write_file, write_text

CSV_HEADER = ("block", "key", "shape", "cosine", "rel_l2", "attention_sim")
METRICS = ("cosine mean", "cosine min", "cosine weighted", "attention")


def csv_text(result: Similarity) -> str:
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(CSV_HEADER)
    for k in result.keys:
        attention = "" if k.attention is None else f"{k.attention:.4f}"
        writer.writerow([k.slot, k.key, "x".join(map(str, k.shape)), f"{k.cosine:.6f}", f"{k.rel_l2:.6f}", attention])
    return out.getvalue()


def write_csv(result: Similarity, path: str, overwrite: bool = True) -> str:
    return write_text(path, csv_text(result), overwrite)


def block_rows(result: Similarity) -> list[list]:
    """The per-block table: block, keys, cosine mean/min/weighted (%), attention (%)."""
    return [
        [
            b.slot,
            b.keys,
            _pct(b.cosine_mean),
            _pct(b.cosine_min),
            _pct(b.cosine_weighted),
            None if b.attention is None else round(b.attention, 3),
        ]  # fmt: skip
        for b in result.blocks
    ]


def _pct(cosine: float) -> float:
    return round(cosine * 100, 3)


def _values(b: BlockSimilarity) -> list[float | None]:
    return [b.cosine_mean * 100, b.cosine_min * 100, b.cosine_weighted * 100, b.attention]


def _colour(value: float) -> tuple[int, int, int]:
    """0 % red, 50 % yellow, 100 % green; values outside are held at the ends."""
    t = min(max(value / 100, 0.0), 1.0)
    low, mid, high = (200, 50, 50), (235, 215, 90), (50, 165, 80)
    a, b, u = (low, mid, t * 2) if t < 0.5 else (mid, high, (t - 0.5) * 2)
    return tuple(int(x + (y - x) * u) for x, y in zip(a, b, strict=True))


def heatmap(result: Similarity) -> Image.Image:
    """Rows = blocks, columns = metrics, each cell coloured on the fixed scale and labelled with its value."""
    cell_w, cell_h, label_w, head_h = 120, 22, 90, 40
    rows = result.blocks
    image = Image.new("RGB", (label_w + cell_w * len(METRICS), head_h + cell_h * max(1, len(rows))), "white")
    draw = ImageDraw.Draw(image)
    # The bitmap font on every Pillow (the WebUI pins 9.5, which has no other built in): Latin-1 only.
    draw.font = getattr(ImageFont, "load_default_imagefont", ImageFont.load_default)()
    draw.text((4, 4), _drawable(f"{result.a} vs {result.b}"[:80]), fill="black")
    for j, name in enumerate(METRICS):
        draw.text((label_w + j * cell_w + 4, head_h - 16), name, fill="black")
    for i, block in enumerate(rows):
        y = head_h + i * cell_h
        draw.text((4, y + 5), _drawable(block.slot), fill="black")
        for j, value in enumerate(_values(block)):
            x = label_w + j * cell_w
            if value is None:
                draw.rectangle((x, y, x + cell_w - 1, y + cell_h - 1), fill=(235, 235, 235))
                draw.text((x + 4, y + 5), "-", fill="black")
            else:
                draw.rectangle((x, y, x + cell_w - 1, y + cell_h - 1), fill=_colour(value))
                draw.text((x + 4, y + 5), f"{value:.2f} %", fill="black")
    return image


def _drawable(text: str) -> str:
    """Text the built-in bitmap font can draw (Latin-1); other characters become "?"."""
    return text.encode("latin-1", "replace").decode("latin-1")


def write_heatmap(result: Similarity, path: str, overwrite: bool = True) -> str:
    image = heatmap(result)
    return write_file(path, lambda f: image.save(f, format="PNG"), overwrite)
