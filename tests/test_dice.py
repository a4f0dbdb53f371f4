"""Dice: formulas, ranges, reproducibility from the seed, E-tokens, the random XYZ axis, the E-list."""

from __future__ import annotations

import csv
import zlib

import numpy as np
import pytest

from lib_merge.app.dice import DiceSettings, ElistInput, elist_rows, roll, roll_seeds, write_elist
from lib_merge.app.plots.plan import PlanContext, XYZPlan, expand
from lib_merge.arch.blocks import SCHEMAS
from lib_merge.errors import ParameterError

SD1, SDXL = SCHEMAS["sd1"], SCHEMAS["sdxl"]


def draws(seed: int, count: int) -> list[float]:
    rng = np.random.default_rng(seed)
    return [float(rng.random()) for _ in range(count)]


@pytest.mark.parametrize(
    "mode, formula",
    [
        ("R", lambda r: r),
        ("U", lambda r: 1.5 - 2 * r),
        ("X", lambda r: (0.2 - 0.9) * r + 0.9),
        ("D", lambda r: 0.9 + 0.2 * (r - 0.5)),
    ],
)
def test_modes_follow_the_formulas_in_schema_order(mode, formula):
    settings = DiceSettings(mode=mode, upper="0.9", lower="0.2", round=6)
    result = roll(settings, SD1, 123)
    assert result.alpha == [round(formula(r), 6) for r in draws(123, 26)] and result.beta is None


def test_same_seed_same_vectors_and_alpha_before_beta():
    settings = DiceSettings(mode="U", target="both")
    first, again = roll(settings, SDXL, 77), roll(settings, SDXL, 77)
    assert first.alpha == again.alpha and first.beta == again.beta
    r = draws(77, 40)
    assert first.alpha == [round(1.5 - 2 * x, 3) for x in r[:20]]
    assert first.beta == [round(1.5 - 2 * x, 3) for x in r[20:]]
    assert roll(settings, SDXL, 78).alpha != first.alpha


def test_ranges_clamps_rounding_and_custom_vector():
    values = roll(DiceSettings(mode="U", round=2), SD1, 5).alpha
    assert all(-0.5 <= v <= 1.5 for v in values) and all(round(v, 2) == v for v in values)
    clamped = roll(DiceSettings(mode="U", clamp_min="0", clamp_max="1"), SD1, 5).alpha
    assert all(0 <= v <= 1 for v in clamped) and 0 in clamped and 1 in clamped
    custom = roll(DiceSettings(mode="custom"), SD1, 9).alpha  # default: U, 12 zeros, 13 R
    r = draws(9, 26)
    assert custom[0] == round(1.5 - 2 * r[0], 3) and custom[1:13] == [0.0] * 12
    assert custom[13:] == [round(x, 3) for x in r[13:]]
    with pytest.raises(ParameterError, match="clamp max: 3 values given; give one, or 26"):
        roll(DiceSettings(clamp_max="1,1,1"), SD1, 1)
    with pytest.raises(ParameterError, match="custom vector at IN00: 'Q'"):
        roll(DiceSettings(mode="custom", custom="0,Q" + ",0" * 24), SD1, 1)


def test_probability_syntax_takes_its_own_draw():
    result = roll(DiceSettings(mode="X", upper="1", lower="0.3R0.5", round=6), SD1, 11)
    r = draws(11, 52)
    expected = []
    for i in range(26):
        draw, chance = r[2 * i], r[2 * i + 1]
        u, low = (1.0, 0.3) if chance < 0.5 else (0.0, 0.0)
        expected.append(round((low - u) * draw + u, 6))
    assert result.alpha == expected


def test_e_tokens_zero_the_slot_and_draw_per_key():
    result = roll(DiceSettings(mode="ER"), SD1, 3)
    assert result.alpha == [0.0] * 26 and result.elemental[:2] == ["BASE::R", "IN00::R"]
    key = "model.diffusion_model.input_blocks.1.1.proj_in.weight"
    rows = elist_rows(ElistInput([key], SD1, result.alpha, None, ", ".join(result.elemental), 3))
    expected = float(np.random.default_rng([3, zlib.crc32(key.encode())]).random())
    assert rows == [(key, "IN01", expected, "")]


def test_extended_sdxl_fills_110_slots():
    result = roll(DiceSettings(mode="R", extended=True), SDXL, 1)
    assert len(result.alpha) == 110


def test_roll_seeds_and_the_random_axis(tmp_path):
    assert roll_seeds(DiceSettings(seed=10), 3) == [10, 11, 12]
    fresh = roll_seeds(DiceSettings(seed=-1), 3)
    assert len(set(fresh)) == 3 and all(0 <= s < 2**31 for s in fresh)
    plan = XYZPlan.from_dict(
        {"x": {"type": "random", "values": "3"}, "merge": {"a": "a", "b": "b"}, "dice": {"mode": "R", "seed": 40}}
    )
    cells = expand(plan, PlanContext(SD1))
    assert [c.dice_seed for c in cells] == [40, 41, 42]
    for cell in cells:
        assert cell.settings.blocks == ",".join(repr(round(r, 3)) for r in draws(cell.dice_seed, 26))


def test_elist_csv_has_header_and_one_row_per_key(tmp_path):
    keys = [
        "model.diffusion_model.input_blocks.1.1.proj_in.weight",
        "model.diffusion_model.out.2.weight",
        "first_stage_model.decoder.conv_in.weight",
    ]
    alpha = [0.5] * 26
    alpha[SD1.index("OUT11")] = 0.25
    rows = elist_rows(ElistInput(keys, SD1, alpha, [0.1] * 26, "IN01:proj_in:0.9", 0))
    assert rows == [(keys[0], "IN01", 0.9, 0.1), (keys[1], "OUT11", 0.25, 0.1), (keys[2], "VAE", 0.5, 0.1)]
    path = write_elist(tmp_path / "elists", 7, rows)
    assert path.name == "7.csv"
    with open(path, newline="") as f:
        lines = list(csv.reader(f))
    assert lines[0] == ["key", "slot", "alpha", "beta"] and lines[1][0] == keys[0] and float(lines[1][2]) == 0.9
