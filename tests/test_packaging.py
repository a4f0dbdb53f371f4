"""The package as pip installs it: a wheel built from the repository, in a fresh venv, run from elsewhere."""

from __future__ import annotations

import os
import site
import subprocess
import sys
import sysconfig
import zipfile
from pathlib import Path

import torch
from helpers import load

from lib_merge.engine.to_file import SaveOptions, merge_to_file
from lib_merge.recipe.form import MergeSettings, build_recipe

ROOT = Path(__file__).resolve().parents[1]


def run(*args, **kwargs) -> subprocess.CompletedProcess:
    proc = subprocess.run([str(a) for a in args], capture_output=True, text=True, timeout=600, **kwargs)
    assert proc.returncode == 0, f"{args}: {proc.stdout}\n{proc.stderr}"
    return proc


def test_the_wheel_carries_its_data_and_merges_with_a_preset_from_another_folder(sd1, tmp_path):
    wheels = tmp_path / "wheels"
    run(sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q", "-w", wheels, ROOT)
    (wheel,) = wheels.glob("alloy_merge-*.whl")
    names = set(zipfile.ZipFile(wheel).namelist())
    assert "lib_merge/arch/data/mbw_presets.tsv" in names and "lib_merge/arch/data/sd1.json" in names
    assert not any(name.startswith(("tests/", "bench/", "tools/")) for name in names)

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
