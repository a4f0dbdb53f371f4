"""Block-vector syntax and the shipped presets."""

from __future__ import annotations

import math

import pytest

from lib_merge.arch.blocks import schema_for
from lib_merge.arch.presets import SHIPPED_PRESETS, load_presets, lookup_preset, read_preset_file
from lib_merge.errors import BlockVectorError, PresetError
from lib_merge.recipe.vectors import format_vector, parse_vector

SD1 = schema_for("sd1")
SDXL = schema_for("sdxl")


def values(spec, schema=SD1, default=None):
    return dict(zip(schema.slots, parse_vector(spec, schema, default).vector.values))


def test_named_form_example_from_the_spec():
    v = values("IN00=0.3 OUT05-OUT11=1 *=0.5")
    assert v["BASE"] == 0.5 and v["IN00"] == 0.3 and v["M00"] == 0.5
    assert all(v[f"IN{i:02d}"] == 0.5 for i in range(1, 12))
    assert all(v[f"OUT{i:02d}"] == 0.5 for i in range(0, 5))
    assert all(v[f"OUT{i:02d}"] == 1.0 for i in range(5, 12))
    assert values("*=0.5 IN00=0.3 OUT05-OUT11=1") == v


def test_groups_ranges_and_the_scalar_default():
    v = values("IN*=1 IN03=0", default=0.25)
    assert [v[f"IN{i:02d}"] for i in range(12)] == [1, 1, 1, 0] + [1] * 8
    assert v["BASE"] == v["M00"] == v["OUT07"] == 0.25
    r = values("IN05-OUT02=1", default=0.0)
    expected = [f"IN{i:02d}" for i in range(5, 12)] + ["M00", "OUT00", "OUT01", "OUT02"]
    assert [s for s, x in r.items() if x == 1] == expected


def test_named_form_without_star_or_scalar_fills_zero_with_a_note():
    parsed = parse_vector("IN00=1", SD1, None)
    assert parsed.vector.values[0] == 0.0 and parsed.notes


def test_vae_is_set_only_by_name_and_otherwise_follows_base():
    v = parse_vector("*=0.4", SD1).vector
    assert v.vae is None and v.value(SD1, "VAE") == 0.4
    v = parse_vector("*=0.4 BASE=0.2 VAE=0.9", SD1).vector
    assert v.value(SD1, "VAE") == 0.9
    v27 = parse_vector(",".join(["0.1"] * 26 + ["0.7"]), SD1).vector
    assert v27.vae == 0.7


def test_lists_of_the_right_lengths():
    assert len(parse_vector(",".join(["0.5"] * 26), SD1).vector.values) == 26
    assert len(parse_vector([0.5] * 20, SDXL).vector.values) == 20


def test_26_values_on_sdxl_are_mapped_and_noted():
    raw = [float(i) for i in range(26)]
    parsed = parse_vector(raw, SDXL)
    v = dict(zip(SDXL.slots, parsed.vector.values))
    assert v["BASE"] == 0 and v["IN08"] == 9 and v["M00"] == 13 and v["OUT00"] == 14 and v["OUT08"] == 22
    assert parsed.notes == ("26-value vector mapped to SDXL: IN09–IN11, OUT09–OUT11 ignored",)


def test_bad_vectors_name_the_problem():
    with pytest.raises(BlockVectorError, match=r"20 values given but SD1 has 26 blocks \(BASE, IN00…IN11"):
        parse_vector([0.1] * 20, SD1)
    with pytest.raises(BlockVectorError, match="has 7 values but SDXL takes 20 or 21"):
        parse_vector([0.1] * 7, SDXL)
    valid = "valid: BASE, IN00…IN11, M00, OUT00…OUT11, VAE"
    with pytest.raises(BlockVectorError, match=f"unknown block 'IN12' for SD1; {valid}"):
        parse_vector("IN12=1", SD1)
    with pytest.raises(BlockVectorError, match="unknown block 'IN09' for SDXL"):
        parse_vector("IN09=1", SDXL)
    with pytest.raises(BlockVectorError, match="value 3: 'x' is not a number"):
        parse_vector("0.1,0.2,x," + ",".join(["0"] * 23), SD1)
    with pytest.raises(BlockVectorError, match="runs backwards"):
        parse_vector("OUT02-IN05=1", SD1)


def test_canonical_form_collapses_runs_and_reparses_to_the_same_vector():
    v = parse_vector("*=0.5 M00=0.2 OUT00-OUT11=1.0 BASE=0", SD1).vector
    text = format_vector(v, SD1)
    assert text == "BASE=0.0 IN00-IN11=0.5 M00=0.2 OUT00-OUT11=1.0"
    assert parse_vector(text, SD1).vector == v


# Independent evaluation of the preset formulas (tools/build_presets.py).
def _s(x):
    return 3 * x**2 - 2 * x**3


def _tri(v):
    return abs(((v + 1) % 2) - 1)


FORMULAS = {
    "GRAD_V": lambda i, t: abs(1 - 2 * t),
    "GRAD_A": lambda i, t: 1 - abs(1 - 2 * t),
    "SMOOTHSTEP": lambda i, t: _s(t),
    "R_SMOOTHSTEP*2": lambda i, t: 1 - _tri(2 * _s(t)),
    "SMOOTHSTEP*3": lambda i, t: _tri(3 * _s(t)),
    "SMOOTHSTEP/4": lambda i, t: _s(_tri(4 * t)),
    "REVERSE_COSINE": lambda i, t: (1 - math.cos(math.pi * t)) / 2,
    "TRUE_CUBIC_HERMITE": lambda i, t: 0 if i == 0 else 77 / 12 * t**3 - 77 / 8 * t**2 + 25 / 6 * t + 1 / 24,
    "FAKE_REVERSE_CUBIC_HERMITE": lambda i, t: 1 - (19 / 3 * t**3 - 19 / 2 * t**2 + 25 / 6 * t),
}


@pytest.mark.parametrize("name", sorted(FORMULAS))
@pytest.mark.parametrize("schema", [SD1, SDXL], ids=["sd1", "sdxl"])
def test_shipped_curve_presets_follow_their_formulas(name, schema):
    n = len(schema) - 1
    expected = [0.0] + [FORMULAS[name](i, i / (n - 1)) for i in range(n)]
    assert lookup_preset(name, schema) == pytest.approx(expected, abs=1e-12)


def test_preset_values_from_the_spec_tables():
    assert lookup_preset("SMOOTHSTEP", SD1)[2] == pytest.approx(0.00506365740740741, abs=1e-15)
    assert lookup_preset("COSINE", SD1)[2] == pytest.approx(0.995722430686905, abs=1e-15)
    assert lookup_preset("TRUE_CUBIC_HERMITE", SD1)[2] == pytest.approx(0.199031876929012, abs=1e-15)
    ring = "0,0,0,0,0,0,0.5,1,1,1,0.5,0,0,0,0,0,0.5,1,1,1,0.5,0,0,0,0,0"
    assert lookup_preset("RING08_SOFT", SD1) == [float(x) for x in ring.split(",")]
    assert lookup_preset("OUT12_5", SD1) == [0.0] * 13 + [0.5] + [1.0] * 12
    assert lookup_preset("ALL_B", SD1) == [1.0] * 26
    sdxl_cos = "0,1,0.9924,0.9698,0.933,0.883,0.8214,0.75,0.671,0.5868,0.5,0.4132,0.329,0.25,0.1786,0.117,0.067"
    assert lookup_preset("COSINE", SDXL)[:17] == pytest.approx([float(x) for x in sdxl_cos.split(",")], abs=5e-5)


def test_shipped_file_has_38_sd1_presets_and_sdxl_forms():
    presets = read_preset_file(SHIPPED_PRESETS)
    assert len([1 for (_, n) in presets if n == 26]) == 38
    assert {name for name, n in presets if n == 20} >= {"GRAD_V", "COSINE", "ALL_A", "SMOOTHSTEP/4"}
    assert ("WRAP08", 20) not in presets


def test_step_preset_on_sdxl_goes_through_the_26_to_20_mapping():
    parsed = parse_vector("WRAP08", SDXL)
    v = dict(zip(SDXL.slots, parsed.vector.values))
    assert [v[f"IN{i:02d}"] for i in range(9)] == [1, 1, 1, 1, 0, 0, 0, 0, 0]
    assert v["OUT08"] == 1.0 and v["OUT07"] == 0.0


def test_unknown_preset_suggests_close_names():
    with pytest.raises(PresetError, match="unknown preset 'GRAD_W' for SD1; did you mean GRAD_V"):
        lookup_preset("GRAD_W", SD1)


def test_user_preset_file_overrides_and_reads_supermerger_format(tmp_path, monkeypatch):
    monkeypatch.setenv("ALLOY_HOME", str(tmp_path))
    (tmp_path / "mbw_presets.tsv").write_text("preset_name\tpreset_weights\nGRAD_V:" + ",".join(["0.5"] * 26) + "\n")
    assert lookup_preset("GRAD_V", SD1) == [0.5] * 26
    assert ("GRAD_V", 20) in load_presets()
