"""What a new user met on a fresh clone: values that slipped past the checks, files the WebUI cannot load,
words that did not fit the surface they were shown on, and commands that said nothing."""

from __future__ import annotations

import re
import zipfile
from pathlib import Path

import pytest
import torch
from helpers import load
from test_cli import ROOT, cli, error_line

from lib_merge.errors import OutputExistsError, message_for
from lib_merge.io.source import SourceModel
from lib_merge.surfaces.cli import main
from lib_merge.ui.jobs import error_text


@pytest.fixture
def no_reads(monkeypatch):
    """Any tensor read fails the test: the checks must come before the first one."""

    def refuse(self, key, *args, **kwargs):
        raise AssertionError(f"a tensor was read ({key}) before the value was checked")

    monkeypatch.setattr(SourceModel, "read", refuse)
    monkeypatch.setattr(SourceModel, "view", refuse)


@pytest.mark.parametrize(
    "flags, named",
    [
        (["--alpha", "1e300"], "alpha"),
        (["--alpha", "-1001"], "alpha"),
        (["--blocks", "IN00=nan *=0.5"], "IN00=nan"),
        (["--blocks", "IN00=1e999 *=0.5"], "IN00=1e999"),
        (["--blocks", "OUT11=inf"], "OUT11=inf"),
        (["--blocks", ",".join(["0.5"] * 25 + ["nan"])], "value 26"),
        (["--mode", "triple_sum", "--beta", "5000"], "beta"),
    ],
)
def test_every_number_is_checked_before_the_first_read(sd1, tmp_path, capsys, no_reads, flags, named):
    out = tmp_path / "out.safetensors"
    args = ["merge", "--a", sd1[0], "--b", sd1[1], "--c", sd1[2], *flags, "-o", out, "--no-history"]
    if "--mode" not in flags:
        args.remove("--c"), args.remove(sd1[2])
    code = main(args)
    error = capsys.readouterr().err.strip().splitlines()
    assert code == 3 and len(error) == 1 and named in error[0], error
    assert not out.exists() and list(tmp_path.iterdir()) == []


def test_a_recipe_block_vector_with_nan_is_refused_before_the_first_read(sd1, tmp_path, capsys, no_reads):
    recipe = tmp_path / "r.alloy"
    recipe.write_text(
        f'alloy-recipe 1\nA = model("{sd1[0]}")\nB = model("{sd1[1]}")\n'
        'merged = weighted_sum(A, B, alpha=blocks("IN00=nan *=0.5"))\n'
    )
    assert main(["merge", recipe, "-o", tmp_path / "o.safetensors", "--no-history"]) == 3
    assert "IN00=nan" in capsys.readouterr().err


def test_the_ending_of_the_output_decides_its_format(sd1, tmp_path):
    ckpt = tmp_path / "merged.ckpt"
    proc = cli("merge", "--a", sd1[0], "--b", sd1[1], "--alpha", "0.3", "-o", ckpt, "--no-history")
    assert proc.returncode == 0, proc.stderr
    assert zipfile.is_zipfile(ckpt)  # torch's pickle format, as the WebUI's .ckpt loader expects
    tensors = torch.load(ckpt, weights_only=True)["state_dict"]
    a, b = load(sd1[0]), load(sd1[1])
    key = "model.diffusion_model.out.2.weight"
    expected = (a[key].double() * 0.7 + b[key].double() * 0.3).half()
    assert (tensors[key].float() - expected.float()).abs().max() <= 1e-3

    wrong = tmp_path / "wrong.safetensors"
    proc = cli("merge", "--a", sd1[0], "--b", sd1[1], "--format", "ckpt", "-o", wrong, "--no-history")
    assert proc.returncode == 5 and "ends in .safetensors but would hold ckpt" in error_line(proc)
    assert not wrong.exists()
    proc = cli("prune", sd1[0], "-o", tmp_path / "pruned.ckpt")
    assert proc.returncode == 5 and "use .safetensors" in error_line(proc)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["merged.ckpt"]


@pytest.mark.parametrize("overwrite", [[], ["--overwrite"]])
def test_an_output_that_is_a_folder_is_refused_before_the_merge(sd1, tmp_path, capsys, no_reads, overwrite):
    folder = tmp_path / "models"
    folder.mkdir()
    code = main(["merge", "--a", sd1[0], "--b", sd1[1], "-o", folder, "--no-history", *overwrite])
    error = capsys.readouterr().err
    assert code == 5 and f"{folder} is a folder" in error and ".alloy-tmp" not in error
    assert list(folder.iterdir()) == []


def test_supermergers_mode_names_and_its_default_mode(sd1, tmp_path):
    def recipe_hash(*flags) -> str:
        proc = cli("merge", "--a", sd1[0], "--b", sd1[1], *flags, "--print-recipe")
        assert proc.returncode == 0, proc.stderr
        return proc.stdout

    plain = recipe_hash("--mode", "weighted_sum", "--alpha", "0.5")
    assert recipe_hash() == plain  # no --mode: a weighted sum at 0.5, as in SuperMerger
    assert recipe_hash("--mode", "Weight sum") == plain
    assert recipe_hash("--mode", "weight SUM", "--alpha", "0.5") == plain
    add = recipe_hash("--mode", "Add difference", "--c", sd1[2])
    assert "add_difference(" in add
    proc = cli("merge", "--a", sd1[0], "--b", sd1[1], "--mode", "Weight product", "-o", tmp_path / "x.safetensors")
    assert proc.returncode == 3 and "weighted_sum (Weight sum)" in error_line(proc)


def test_lora_inspect_on_a_checkpoint_says_what_it_is(sd1):
    proc = cli("lora", "inspect", sd1[0])
    assert proc.returncode == 4
    assert error_line(proc) == f"error: {Path(sd1[0]).name} is a checkpoint (SD1), not a LoRA"


def test_history_list_of_a_missing_file_is_an_error(tmp_path):
    proc = cli("history", "list", "--file", tmp_path / "missing.csv")
    assert proc.returncode == 4 and "no history file at" in error_line(proc)


def test_version():
    proc = cli("--version")
    assert proc.returncode == 0 and re.fullmatch(r"Alloy \d+\.\d+\.\d+\n", proc.stdout)


def test_an_existing_file_is_reported_in_each_surfaces_words():
    error = OutputExistsError("/m/x.safetensors exists; choose another name")
    assert message_for(error, "cli").endswith("or use --overwrite")
    assert message_for(error, "http").endswith('or set "overwrite": true')
    assert "--overwrite" not in error_text(error) and "tick the overwrite box" in error_text(error)


def test_the_readme_names_every_command():
    from lib_merge.surfaces.cli import COMMANDS

    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    found = re.findall(r"python -m lib_merge (?:--\S+ \S+ )?([a-z-]+)(?: (run)\b)?", readme)
    listed = {f"{word}-{sub}" if sub else word for word, sub in found}  # `xyz run` is the command xyz-run
    assert set(COMMANDS) - listed == set()
