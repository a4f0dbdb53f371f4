"""The analysis pictures people read: the heatmap (viridis cells on a log scale, a colour bar, labels in a
TrueType font of a readable size, text in the contrasting colour) and the bar chart (bars as long as their
values). References are computed here, independently of lib_merge/analysis."""

from __future__ import annotations

import importlib.util
import math
import os
import shutil
from pathlib import Path

import numpy as np
import pytest
from PIL import Image, ImageFont
from test_lora_merge_extract import run

from lib_merge.analysis.similarity import BlockSimilarity, Similarity

# viridis at i/16, i = 0 … 16 (the published ramp)
VIRIDIS = ["440154", "48186a", "472d7b", "424086", "3b528b", "33638d", "2c728e", "26828e", "21918c", "1fa088",
           "28ae80", "3fbc73", "5ec962", "84d44b", "addc30", "d8e219", "fde725"]  # fmt: skip
COSINES = {"BASE": 0.99995, "IN00": 0.9993, "IN01": 0.998, "M00": 0.99, "OUT00": 0.93, "OUT11": 0.9999}


def reference_colour(t: float) -> np.ndarray:
    anchors = np.array([[int(h[i : i + 2], 16) for i in (0, 2, 4)] for h in VIRIDIS], dtype=float)
    x = min(max(t, 0.0), 1.0) * 16
    i = min(int(x), 15)
    return anchors[i] + (anchors[i + 1] - anchors[i]) * (x - i)


def reference_position(similarity: float, values: list[float]) -> float:
    """Log of 100 − similarity, between the 1-2-5 numbers around the data (most similar = 1)."""
    steps = sorted(m * 10.0**k for k in range(-4, 4) for m in (1, 2, 5))
    distances = [max(100 - v, 1e-3) for v in values]
    low = max(s for s in steps if s <= min(distances) * (1 + 1e-9))
    high = min(s for s in steps if s >= max(distances) * (1 - 1e-9))
    d = max(100 - similarity, 1e-3)
    return (math.log10(high) - math.log10(d)) / (math.log10(high) - math.log10(low))


def sample() -> Similarity:
    blocks = [
        BlockSimilarity(slot, 10, c, c - (1 - c) * 3, c + (1 - c) * 0.5, None if slot == "BASE" else c * 100)
        for slot, c in COSINES.items()
    ]
    return Similarity("a.safetensors", "b.safetensors", "SD1", blocks=blocks)


def dark_box(pixels: np.ndarray) -> tuple[int, int] | None:
    """Width and height of the dark pixels' bounding box (text on a light background)."""
    ys, xs = np.nonzero(pixels.mean(axis=-1) < 110)
    return (int(xs.max() - xs.min() + 1), int(ys.max() - ys.min() + 1)) if len(ys) else None


def dejavu() -> str | None:
    """A TrueType file other than Pillow's built-in font: matplotlib's copy (gradio brings it) or the system's."""
    spec = importlib.util.find_spec("matplotlib")
    places = [Path(p) / "mpl-data/fonts/ttf/DejaVuSans.ttf" for p in (spec.submodule_search_locations if spec else [])]
    places.append(Path("/usr/share/fonts/truetype/dejavu/DejaVuSans.ttf"))
    return next((str(p) for p in places if p.is_file()), None)


def test_heatmap_cells_are_viridis_on_a_log_scale_of_the_distance_from_identical():
    from lib_merge.analysis.drawing import Fonts
    from lib_merge.analysis.heatmap import heatmap, heatmap_layout

    result = sample()
    pixels = np.asarray(heatmap(result).convert("RGB"), dtype=float)
    layout = heatmap_layout(result, Fonts.load())
    assert layout.columns == ["cosine mean", "cosine min", "cosine weighted", "attention"]
    values = [v for b in result.blocks for v in (b.cosine_mean * 100, b.cosine_min * 100, b.cosine_weighted * 100,
                                                  b.attention) if v is not None]  # fmt: skip
    for i, block in enumerate(result.blocks):
        for j, value in enumerate([block.cosine_mean * 100, block.cosine_min * 100, block.cosine_weighted * 100,
                                   block.attention]):  # fmt: skip
            x0, y0, _, _ = layout.cell(i, j)
            got = pixels[y0 + 3, x0 + 3]
            if value is None:
                assert np.allclose(got, 235), (block.slot, j, got)
            else:
                expected = reference_colour(reference_position(value, values))
                assert np.abs(got - expected).max() <= 1.5, (block.slot, j, got, expected)
    # the 99.x % blocks do not share one colour: 99.995 and 99.93 lie far apart on the ramp
    assert np.abs(pixels[layout.cell(0, 0)[1] + 3, layout.cell(0, 0)[0] + 3]
                  - pixels[layout.cell(1, 0)[1] + 3, layout.cell(1, 0)[0] + 3]).max() > 40  # fmt: skip


def test_heatmap_has_a_colour_bar_of_the_ramp_with_its_range():
    from lib_merge.analysis.drawing import Fonts
    from lib_merge.analysis.heatmap import heatmap, heatmap_layout

    result = sample()
    pixels = np.asarray(heatmap(result).convert("RGB"), dtype=float)
    left, top, right, bottom = heatmap_layout(result, Fonts.load()).bar
    assert bottom - top >= 200 and right - left >= 16
    x = (left + right) // 2
    for y in range(top, bottom + 1, 7):
        expected = reference_colour(1 - (y - top) / (bottom - top))
        assert np.abs(pixels[y, x] - expected).max() <= 1.5, (y, pixels[y, x], expected)
    # tick labels right of the bar: at its top (the most similar end, 99.995) and at its bottom (80)
    beside = pixels[:, right + 8 : right + 90]
    assert dark_box(beside[top - 8 : top + 9]) is not None and dark_box(beside[bottom - 8 : bottom + 9]) is not None


def test_heatmap_labels_are_truetype_at_a_readable_size_and_values_contrast_with_their_cell():
    from lib_merge.analysis.drawing import Fonts
    from lib_merge.analysis.heatmap import heatmap, heatmap_layout

    result = sample()
    pixels = np.asarray(heatmap(result).convert("RGB"), dtype=float)
    layout = heatmap_layout(result, Fonts.load())
    x0, y0, _, y1 = layout.cell(1, 0)
    width, height = dark_box(pixels[y0 : y1 + 1, :x0])  # "IN00"
    assert height >= 12 and width >= 30, (width, height)
    for i, j in [(4, 1), (0, 0)]:  # OUT00's cosine min (dark purple), BASE's cosine mean (yellow)
        box = layout.cell(i, j)
        cell = pixels[box[1] : box[3] + 1, box[0] : box[2] + 1].reshape(-1, 3)
        background = cell[0]
        ink = cell[np.abs(cell - background).max(axis=1) > 60]
        assert len(ink) > 20
        lum = lambda c: 0.2126 * c[0] + 0.7152 * c[1] + 0.0722 * c[2]  # noqa: E731
        assert abs(lum(ink.mean(axis=0)) - lum(background)) > 100, (i, j, background, ink.mean(axis=0))


def test_bar_lengths_are_proportional_to_the_distance_from_identical():
    from lib_merge.analysis.report import bar_chart

    result = sample()
    pixels = np.asarray(bar_chart(result).convert("RGB"), dtype=int)
    bar = (pixels[..., 2] - pixels[..., 0]) > 50  # the bars' blue, nothing else in the chart is
    rows = np.nonzero(bar.any(axis=1))[0]
    groups = np.split(rows, np.nonzero(np.diff(rows) > 1)[0] + 1)
    assert len(groups) == len(result.blocks)
    lengths = [int(bar[g[len(g) // 2]].sum()) for g in groups]
    heights = [len(g) for g in groups]
    assert min(heights) >= 12 and max(heights) - min(heights) <= 1
    distances = [100 - 100 * c for c in COSINES.values()]
    scale = lengths[distances.index(max(distances))] / max(distances)
    for slot, length, d in zip(COSINES, lengths, distances, strict=True):
        assert abs(length - d * scale) <= 1.5, (slot, length, d * scale)
    starts = {int(np.nonzero(bar[g[len(g) // 2]])[0][0]) for g in groups}
    assert len(starts) == 1  # one zero line for every bar
    (start,) = starts
    label_width, label_height = dark_box(pixels[groups[4][0] : groups[4][-1] + 1, : start - 2].astype(float))
    assert label_height >= 12 and label_width >= 40  # "OUT00"
    assert dark_box(pixels[groups[-1][-1] + 4 :, start - 10 : start + 12].astype(float)) is not None  # the axis' "0"


def test_the_pictures_use_the_hosts_font_like_the_xyz_grids(tmp_path, sd1):
    """The Analysis tab's pictures are drawn in the host's TrueType font, as the XYZ grids are."""
    from lib_merge.analysis.report import bar_chart, heatmap
    from lib_merge.app.toolkit import analyze
    from lib_merge.host.folder import FolderHost

    font = dejavu()
    if font is None:
        pytest.skip("no DejaVuSans.ttf here to stand for a host's font")
    for p in sd1[:2]:
        shutil.copy(p, tmp_path / p.name)

    class FontHost(FolderHost):
        def font_path(self) -> str | None:
            return font

    done = analyze(sd1[0].name, sd1[1].name, False, FontHost(str(tmp_path)))
    for path, draw in ((done.heatmap_path, heatmap), (done.chart_path, bar_chart)):
        saved = np.asarray(Image.open(path).convert("RGB"))
        assert np.array_equal(saved, np.asarray(draw(done.result, font))), path
        assert not np.array_equal(saved, np.asarray(draw(done.result)))  # Pillow's own font draws another picture


def test_without_pillows_scalable_font_the_labels_stay_truetype(monkeypatch):
    """Pillow < 10.1 (the WebUI pins 9.5) has no scalable built-in font: a system TrueType font stands in."""
    from lib_merge.io.fonts import load_font

    real = ImageFont.load_default

    def old_pillow(size=None):
        if size is not None:
            raise TypeError("load_default() got an unexpected keyword argument 'size'")
        return real()

    monkeypatch.setattr(ImageFont, "load_default", old_pillow)
    try:
        ImageFont.truetype("DejaVuSans.ttf", 18)
    except OSError:
        pytest.skip("no DejaVuSans.ttf in the system's font folders")
    font = load_font(18)
    assert isinstance(font, ImageFont.FreeTypeFont) and font.size == 18


def test_the_ramp_is_viridis():
    """The seventeen anchors joined linearly stay within a few levels of matplotlib's 256-step viridis."""
    if importlib.util.find_spec("matplotlib") is None:
        pytest.skip("matplotlib (brought by gradio) is not installed")
    os.environ.setdefault("MPLBACKEND", "Agg")
    from matplotlib import colormaps

    from lib_merge.analysis.colormap import colours

    t = np.linspace(0, 1, 256)
    expected = colormaps["viridis"](t)[:, :3] * 255
    assert np.abs(colours(t).astype(float) - expected).max() <= 6


def test_cli_writes_the_chart_beside_the_other_outputs(sd1, tmp_path):
    from lib_merge.analysis.report import bar_chart
    from lib_merge.analysis.similarity import compare

    proc = run("analyze", sd1[0], sd1[1], "--chart", tmp_path / "c.png", "--heatmap", tmp_path / "h.png")
    assert proc.returncode == 0, proc.stderr
    assert proc.stderr.splitlines()[-2:] == [f"note: wrote {tmp_path / 'h.png'}", f"note: wrote {tmp_path / 'c.png'}"]
    expected = np.asarray(bar_chart(compare(str(sd1[0]), str(sd1[1]))))
    assert np.array_equal(np.asarray(Image.open(tmp_path / "c.png").convert("RGB")), expected)
    again = run("analyze", sd1[0], sd1[1], "--chart", tmp_path / "c.png")
    assert again.returncode == 5 and "exists" in again.stderr
