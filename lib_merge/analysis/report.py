"""An analysis as a table, a CSV, a heatmap (lib_merge/analysis/heatmap.py) and a bar chart (chart.py)."""

from __future__ import annotations

import csv
import io

from lib_merge.analysis.chart import bar_chart  # noqa: F401 - beside heatmap, for callers of this module
from lib_merge.analysis.heatmap import heatmap
from lib_merge.analysis.similarity import Similarity
from lib_merge.io.tempfiles import write_file, write_text

CSV_HEADER = ("block", "key", "shape", "cosine", "rel_l2", "attention_sim")


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


def write_heatmap(result: Similarity, path: str, overwrite: bool = True, font_path: str | None = None) -> str:
    image = heatmap(result, font_path)
    return write_file(path, lambda f: image.save(f, format="PNG"), overwrite)


def write_chart(result: Similarity, path: str, overwrite: bool = True, font_path: str | None = None) -> str:
    image = bar_chart(result, font_path)
    return write_file(path, lambda f: image.save(f, format="PNG"), overwrite)
