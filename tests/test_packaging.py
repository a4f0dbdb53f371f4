"""The package as pip installs it: an sdist and its wheel built from the repository, in a fresh venv, run from
elsewhere, with the shipped presets of the top-level presets/ folder inside."""

from __future__ import annotations

import json
import os
import shutil
import site
import subprocess
import sys
import sysconfig
import tarfile
import zipfile
from pathlib import Path

import torch
from helpers import load

from lib_merge.engine.to_file import SaveOptions, merge_to_file
from lib_merge.recipe.form import MergeSettings, build_recipe

ROOT = Path(__file__).resolve().parents[1]
PRESET_FILES = ("mbw_presets.tsv", "lbw_presets.tsv", "xyz_presets.json")
# What a clean checkout lacks: a stale build/ would put files that are gone from the tree into the wheel.
NOT_SOURCE = shutil.ignore_patterns(
    ".git", ".venv*", "build", "dist", "*.egg-info", "__pycache__", ".*_cache", "user-data", "outputs", "models",
    "results", "*.safetensors", "*.ckpt",
)  # fmt: skip
# Every kind of preset as the package reads it, with a user's MBW preset in user data beside the shipped ones.
PRESETS_SEEN = """
import json
from lib_merge.app.plots.presets import all_presets
from lib_merge.arch.blocks import SCHEMAS
from lib_merge.arch.presets import load_presets, preset_names
from lib_merge.lora.blocks import load_lora_presets
from lib_merge.paths import XYZ_PRESETS, preset_files, shipped_presets_dir
print(shipped_presets_dir())
print(json.dumps({
    "mbw": sorted([name, n, values] for (name, n), values in load_presets().items()),
    "sd1 names": preset_names(SCHEMAS["sd1"]),
    "lora": load_lora_presets(),
    "xyz": all_presets(preset_files(XYZ_PRESETS)[1]),
}))
"""


def run(*args, **kwargs) -> subprocess.CompletedProcess:
    proc = subprocess.run([str(a) for a in args], capture_output=True, text=True, timeout=600, **kwargs)
    assert proc.returncode == 0, f"{args}: {proc.stdout}\n{proc.stderr}"
    return proc


def test_the_wheel_carries_its_data_and_merges_with_a_preset_from_another_folder(sd1, tmp_path):
    source = tmp_path / "source"
    shutil.copytree(ROOT, source, ignore=NOT_SOURCE)
    dist = tmp_path / "dist"
    run(sys.executable, "-c", f"from setuptools import build_meta; build_meta.build_sdist({str(dist)!r})", cwd=source)
    (sdist,) = dist.glob("alloy_merge-*.tar.gz")
    with tarfile.open(sdist) as tar:
        in_sdist = {name.partition("/")[2] for name in tar.getnames()}
    assert {f"presets/{name}" for name in PRESET_FILES} <= in_sdist and "setup.py" in in_sdist
    wheels = tmp_path / "wheels"  # built from the sdist, as pip builds a source release
    run(sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q", "-w", wheels, sdist)
    (wheel,) = wheels.glob("alloy_merge-*.whl")
    names = set(zipfile.ZipFile(wheel).namelist())
    assert {f"lib_merge/presets/{name}" for name in PRESET_FILES} <= names and "lib_merge/arch/data/sd1.json" in names
    assert not any(name.startswith(("tests/", "bench/", "tools/", "presets/")) for name in names)
    assert "lib_merge/arch/data/mbw_presets.tsv" not in names  # its one copy is presets/

    venv = tmp_path / "venv"
    run(sys.executable, "-m", "venv", venv)
    python = venv / "bin" / "python"
    # torch, numpy, safetensors … come from this interpreter's site-packages (a path entry: its .pth files,
    # among them the editable install of the repository, are not read, so lib_merge comes from the wheel)
    purelib = run(python, "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])").stdout.strip()
    here = {sysconfig.get_paths()["purelib"], *site.getsitepackages()}
    Path(purelib, "host-packages.pth").write_text("\n".join(sorted(here)) + "\n")
    run(python, "-m", "pip", "install", "-q", "--no-deps", "--no-index", wheel)

    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    out = tmp_path / "out.safetensors"
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "ALLOY_MODELS_DIR")}
    where = run(python, "-c", "import lib_merge; print(lib_merge.__file__)", cwd=elsewhere, env=env).stdout
    assert where.startswith(purelib), where  # the installed copy, not the repository
    home = tmp_path / "home"
    home.mkdir()
    (home / "mbw_presets.tsv").write_text("MINE\t" + ",".join(["0.5"] * 26) + "\n")
    seen_env = {**env, "ALLOY_HOME": str(home)}
    installed = run(python, "-c", PRESETS_SEEN, cwd=elsewhere, env=seen_env).stdout.splitlines()
    checkout = run(sys.executable, "-c", PRESETS_SEEN, cwd=elsewhere, env=seen_env).stdout.splitlines()
    assert Path(installed[0]) == Path(purelib, "lib_merge", "presets").resolve()
    assert Path(checkout[0]) == ROOT / "presets"
    assert installed[1] == checkout[1]  # every preset of each kind, the same values as in the repository
    seen = json.loads(installed[1])
    assert len(seen["mbw"]) == 64 + 1 and {"MINE", "GRAD_V"} <= set(seen["sd1 names"])
    assert seen["lora"]["OUTD"] == [1, 0, 0, 0, 0, 0, 0, 0, 1, 1, 1, 1, 0, 0, 0, 0, 0] and "alpha 0 to 1" in seen["xyz"]
    merged = run(
        python, "-m", "lib_merge", "merge", "--a", sd1[0], "--b", sd1[1], "--mode", "weighted_sum",
        "--preset", "GRAD_V", "--alpha", "0.5", "-o", out, cwd=elsewhere, env=env,
    )  # fmt: skip
    assert merged.stdout.splitlines()[-1] == str(out)
    reference = merge_to_file(
        build_recipe(MergeSettings(str(sd1[0]), str(sd1[1]), preset="GRAD_V", alpha=0.5)),
        SaveOptions(str(tmp_path / "reference.safetensors"), torch.float16),
    )
    assert merged.stdout.splitlines()[-2] == reference.recipe_hash
    expected = load(reference.path)
    assert all(torch.equal(t, expected[k]) for k, t in load(out).items())
