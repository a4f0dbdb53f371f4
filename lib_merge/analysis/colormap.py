"""Viridis, the perceptual colour ramp: lightness rises evenly from dark purple to yellow, so equal steps
of a value look like equal steps of colour, also to colour-blind eyes and in greyscale print.

Seventeen anchors of the published ramp (viridis at i/16), joined linearly: within 6 of 255 levels of its
256 steps everywhere (tests/test_analysis_pictures.py), and matplotlib is no dependency of Alloy.
"""

from __future__ import annotations

import numpy as np

Rgb = tuple[int, int, int]
VIRIDIS = (
    "#440154", "#48186a", "#472d7b", "#424086", "#3b528b", "#33638d", "#2c728e", "#26828e", "#21918c",
    "#1fa088", "#28ae80", "#3fbc73", "#5ec962", "#84d44b", "#addc30", "#d8e219", "#fde725",
)  # fmt: skip
_ANCHORS = np.array([[int(h[i : i + 2], 16) for i in (1, 3, 5)] for h in VIRIDIS], dtype=np.float64)


def colours(positions) -> np.ndarray:
    """An (n, 3) uint8 array: each position in 0…1 (held at the ends) on the ramp."""
    t = np.clip(np.asarray(positions, dtype=np.float64), 0.0, 1.0) * (len(VIRIDIS) - 1)
    low = np.minimum(np.floor(t).astype(int), len(VIRIDIS) - 2)
    u = (t - low)[..., None]
    return np.rint(_ANCHORS[low] * (1 - u) + _ANCHORS[low + 1] * u).astype(np.uint8)


def colour(position: float) -> Rgb:
    r, g, b = colours([position])[0]
    return int(r), int(g), int(b)


def luminance(rgb: Rgb) -> float:
    """WCAG relative luminance, 0 (black) … 1 (white)."""

    def linear(c: int) -> float:
        s = c / 255
        return s / 12.92 if s <= 0.04045 else ((s + 0.055) / 1.055) ** 2.4

    r, g, b = (linear(c) for c in rgb)
    return 0.2126 * r + 0.7152 * g + 0.0722 * b


def text_colour(background: Rgb) -> Rgb:
    """Black or white, whichever has the higher WCAG contrast ratio on `background`."""
    lum = luminance(background)
    on_black, on_white = (lum + 0.05) / 0.05, 1.05 / (lum + 0.05)
    return (0, 0, 0) if on_black >= on_white else (255, 255, 255)
