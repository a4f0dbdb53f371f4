"""The shipped presets live in the top-level presets/ folder, readable, with the values they always had; the
user's files of the same names in user data are listed beside them and win on a name."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from lib_merge import paths
from lib_merge.app.plots.presets import all_presets, delete_preset, get_preset, save_preset
from lib_merge.arch.blocks import SCHEMAS
from lib_merge.arch.presets import load_presets, lookup_preset, preset_names
from lib_merge.errors import ParameterError
from lib_merge.lora.blocks import load_lora_presets, lora_block_vector, shipped_lora_presets
from lib_merge.paths import LORA_PRESETS, MBW_PRESETS, XYZ_PRESETS, preset_files, shipped_presets_dir

ROOT = Path(__file__).resolve().parents[1]
SD1, SDXL = SCHEMAS["sd1"], SCHEMAS["sdxl"]
GRAD_V = [0.0, 1.0, 0.9166666666666666, 0.8333333333333334, 0.75, 0.6666666666666667, 0.5833333333333333, 0.5,
          0.41666666666666663, 0.33333333333333337, 0.25, 0.16666666666666663, 0.08333333333333337, 0.0,
          0.08333333333333326, 0.16666666666666674, 0.25, 0.33333333333333326, 0.41666666666666674, 0.5,
          0.5833333333333333, 0.6666666666666667, 0.75, 0.8333333333333333, 0.9166666666666667, 1.0]  # fmt: skip
# The LoRA block presets as lora/blocks.py held them in Python before they moved to presets/lbw_presets.tsv.
LORA = {
    "NONE": (0.0,) * 17,
    "ALL": (1.0,) * 17,
    "ALL0.5": (0.5,) * 17,
    "INS": (1, 1, 1, 1, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0),
    "IND": (1, 0, 0, 0, 1, 1, 1, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0),
    "INALL": (1, 1, 1, 1, 1, 1, 1, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0),
    "MIDD": (1, 0, 0, 0, 1, 1, 1, 1, 1, 1, 1, 1, 0, 0, 0, 0, 0),
    "OUTD": (1, 0, 0, 0, 0, 0, 0, 0, 1, 1, 1, 1, 0, 0, 0, 0, 0),
    "OUTS": (1, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1, 1, 1, 1, 1),
    "OUTALL": (1, 0, 0, 0, 0, 0, 0, 0, 1, 1, 1, 1, 1, 1, 1, 1, 1),
}


@pytest.fixture
def home(tmp_path, monkeypatch) -> Path:
    monkeypatch.setenv("ALLOY_HOME", str(tmp_path / "home"))
    (tmp_path / "home").mkdir()
    return tmp_path / "home"


def test_the_shipped_presets_are_plain_files_in_the_top_level_folder():
    assert shipped_presets_dir() == ROOT / "presets"
    assert sorted(p.name for p in (ROOT / "presets").iterdir()) == sorted([MBW_PRESETS, LORA_PRESETS, XYZ_PRESETS])
    assert not (ROOT / "lib_merge" / "presets").exists()  # one copy; the wheel maps it into the package
    assert not list((ROOT / "lib_merge").rglob("*.tsv"))
    mbw = (ROOT / "presets" / MBW_PRESETS).read_text(encoding="utf-8").splitlines()
    assert mbw[0] == "preset_name\tpreset_weights" and "GRAD_V\t" + ",".join(map(repr, GRAD_V)) in mbw
    assert "OUTD\t1,0,0,0,0,0,0,0,1,1,1,1,0,0,0,0,0" in (ROOT / "presets" / LORA_PRESETS).read_text().splitlines()
    assert isinstance(json.loads((ROOT / "presets" / XYZ_PRESETS).read_text()), dict)


def test_every_shipped_xyz_preset_reads_as_axes():
    """Each shipped XYZ preset names known axis types whose values parse (the XYZ tab lists them all)."""
    from lib_merge.app.plots.axes import parse_axis

    shipped = json.loads((ROOT / "presets" / XYZ_PRESETS).read_text())
    assert len(shipped) >= 4
    for name, axes in shipped.items():
        assert set(axes) <= {"x", "y", "z"} and "x" in axes, name
        for axis in axes.values():
            values = parse_axis(axis["type"], axis["values"], SD1)
            assert len(values) >= 2, (name, axis)
    sweep = shipped["alpha 0 to 1"]["x"]
    assert [v.value for v in parse_axis(sweep["type"], sweep["values"], SD1)] == [0.0, 0.25, 0.5, 0.75, 1.0]


def test_the_shipped_presets_keep_their_values(home):
    presets = load_presets()
    assert len(presets) == 64 and len([1 for _, n in presets if n == 26]) == 38
    assert presets[("GRAD_V", 26)] == GRAD_V and lookup_preset("GRAD_V", SD1) == GRAD_V
    assert presets[("FLAT_25", 20)] == [0.0] + [0.25] * 19
    assert presets[("OUT12_5", 26)] == [0.0] * 13 + [0.5] + [1.0] * 12
    assert shipped_lora_presets() == LORA and list(shipped_lora_presets()) == list(LORA)  # the order errors list
    assert load_lora_presets() == LORA
    assert lora_block_vector("OUTD", "sd1") == lora_block_vector(",".join(map(str, LORA["OUTD"])), "sd1")
    with pytest.raises(
        Exception, match=r"not a preset \(NONE, ALL, ALL0.5, INS, IND, INALL, MIDD, OUTD, OUTS, OUTALL\)"
    ):
        lora_block_vector("MISSING", "sd1")


def test_user_presets_in_user_data_are_listed_beside_the_shipped_ones(home):
    assert preset_files(MBW_PRESETS) == (ROOT / "presets" / MBW_PRESETS, home / MBW_PRESETS)
    (home / MBW_PRESETS).write_text("MINE\t" + ",".join(["0.5"] * 26) + "\nGRAD_V:" + ",".join(["1"] * 26) + "\n")
    assert {"MINE", "GRAD_V", "COSINE"} <= set(preset_names(SD1)) and "MINE" in preset_names(SDXL)
    assert lookup_preset("GRAD_V", SD1) == [1.0] * 26  # the user's wins on a name and length
    assert load_presets()[("GRAD_V", 20)][1] == 1.0  # the shipped SDXL form stays
    (home / LORA_PRESETS).write_text("MINE\t" + ",".join(["0.5"] * 17) + "\nOUTD:" + ",".join(["1"] * 17) + "\n")
    lora = load_lora_presets()
    assert list(lora) == [*LORA, "MINE"] and lora["MINE"] == (0.5,) * 17 and lora["OUTD"] == (1.0,) * 17
    assert shipped_lora_presets()["OUTD"] == LORA["OUTD"]


def _shipped(root: Path, xyz: dict) -> Path:
    (root / "presets").mkdir(parents=True)
    (root / "presets" / XYZ_PRESETS).write_text(json.dumps(xyz))
    return root / "presets"


def test_an_installed_package_reads_its_own_copy_else_the_folder_beside_it(tmp_path, monkeypatch):
    monkeypatch.setattr(paths, "_PACKAGE", tmp_path / "site" / "lib_merge")
    assert shipped_presets_dir() == tmp_path / "site" / "presets"  # a checkout or an extension folder
    wheel_copy = _shipped(tmp_path / "site" / "lib_merge", {})
    assert shipped_presets_dir() == wheel_copy


def test_xyz_presets_shipped_and_saved_side_by_side(home, tmp_path, monkeypatch):
    monkeypatch.setattr(paths, "_PACKAGE", tmp_path / "pkg" / "lib_merge")
    shipped = {"sweep": {"x": {"type": "alpha", "values": "0,0.5,1"}}}
    _shipped(tmp_path / "pkg", shipped)
    user = preset_files(XYZ_PRESETS)[1]
    assert user == home / XYZ_PRESETS and all_presets(user) == shipped
    save_preset(user, "mine", {"x": {"type": "beta", "values": "0.3"}})
    assert sorted(all_presets(user)) == ["mine", "sweep"]
    with pytest.raises(ParameterError, match="exists"):
        save_preset(user, "sweep", {"x": {"type": "seed", "values": "1"}})
    save_preset(user, "sweep", {"x": {"type": "seed", "values": "1"}}, overwrite=True)
    assert get_preset(user, "sweep")["x"]["type"] == "seed"  # the user's wins on a name
    assert json.loads((tmp_path / "pkg" / "presets" / XYZ_PRESETS).read_text()) == shipped  # never written
    delete_preset(user, "sweep")
    assert get_preset(user, "sweep") == shipped["sweep"]
    with pytest.raises(ParameterError, match="'sweep' is a shipped XYZ preset"):
        delete_preset(user, "sweep")
