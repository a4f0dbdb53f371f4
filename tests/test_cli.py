"""The command line as a user runs it: real processes, exit codes, output lines, files left."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from helpers import load, metadata

ROOT = Path(__file__).resolve().parents[1]


def cli(*args, cwd=None) -> subprocess.CompletedProcess:
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    return subprocess.run(
        [sys.executable, "-m", "lib_merge", *map(str, args)],
        capture_output=True,
        text=True,
        cwd=cwd,
        env=env,
        timeout=300,
    )


def error_line(proc) -> str:
    lines = [line for line in proc.stderr.splitlines() if line.startswith("error:")]
    assert len(lines) == 1, proc.stderr
    return lines[0]


def test_merge_with_flags_prints_hash_then_path(sd1, tmp_path):
    out = tmp_path / "ws.safetensors"
    proc = cli("merge", "--a", sd1[0], "--b", sd1[1], "--mode", "weighted_sum", "--alpha", "0.25", "-o", out)
    assert proc.returncode == 0, proc.stderr
    lines = proc.stdout.splitlines()
    assert lines[-1] == str(out)
    assert lines[-2] == metadata(out)["alloy_recipe_hash"] and len(lines[-2]) == 64
    a, b, o = load(sd1[0]), load(sd1[1]), load(out)
    k = "model.diffusion_model.input_blocks.1.1.proj_in.weight"
    assert torch.equal(o[k], (0.75 * a[k].double() + 0.25 * b[k].double()).half())


def test_merge_recipe_file_equals_flags(sd1, tmp_path):
    recipe = tmp_path / "r.alloy"
    recipe.write_text(
        f'alloy-recipe 1\nA = model("{sd1[0]}")\nB = model("{sd1[1]}")\nC = model("{sd1[2]}")\n'
        'merged = add_difference(A, B, C, alpha=blocks("IN00=0.3 OUT05-OUT11=1 *=0.5"))\n'
    )
    p1 = cli("merge", recipe, "-o", tmp_path / "from_recipe.safetensors", "--dtype", "fp32")
    p2 = cli(
        "merge",
        "--a",
        sd1[0],
        "--b",
        sd1[1],
        "--c",
        sd1[2],
        "--mode",
        "add",
        "--blocks",
        "IN00=0.3 OUT05-OUT11=1 *=0.5",
        "--dtype",
        "fp32",
        "-o",
        tmp_path / "from_flags.safetensors",
    )
    assert p1.returncode == p2.returncode == 0, p1.stderr + p2.stderr
    assert p1.stdout.splitlines()[-2] == p2.stdout.splitlines()[-2]  # same recipe hash
    r1, r2 = load(tmp_path / "from_recipe.safetensors"), load(tmp_path / "from_flags.safetensors")
    assert all(torch.equal(r1[k], r2[k]) for k in r1)


def test_alpha_fills_blocks_the_vector_leaves_open(sd1, tmp_path):
    proc = cli(
        "merge", "--a", sd1[0], "--b", sd1[1], "--mode", "ws", "--alpha", "0.2", "--blocks", "OUT*=1", "--print-recipe"
    )
    assert proc.returncode == 0, proc.stderr
    assert 'alpha=blocks("BASE-M00=0.2 OUT00-OUT11=1.0")' in proc.stdout


def test_preset_and_26_value_list(sd1, tmp_path):
    vec = ",".join(["0.5"] * 26)
    proc = cli("merge", "--a", sd1[0], "--b", sd1[1], "--mode", "ws", "--blocks", vec, "-o", tmp_path / "l.safetensors")
    assert proc.returncode == 0, proc.stderr
    proc = cli(
        "merge", "--a", sd1[0], "--b", sd1[1], "--mode", "ws", "--preset", "COSINE", "-o", tmp_path / "p.safetensors"
    )
    assert proc.returncode == 0, proc.stderr
    assert json.loads(metadata(tmp_path / "p.safetensors")["sd_merge_recipe"])["weights_alpha"].startswith("0.0,1.0,")


@pytest.mark.parametrize(
    "args, code, message",
    [
        (["--mode", "ws", "--blocks", "0.1,0.2", "--alpha", "0.5"], 3, "takes 26 or 27"),
        (["--mode", "ws", "--blocks", ",".join(["0.1"] * 20)], 3, "20 values given but SD1 has 26 blocks"),
        (["--mode", "ws", "--preset", "GRAD_W"], 3, "unknown preset 'GRAD_W' for SD1; did you mean GRAD_V"),
        (["--mode", "ws", "--blocks", "IN12=1"], 3, "unknown block 'IN12'"),
        (["--mode", "add"], 3, "needs models A, B, C"),
        (["--mode", "nope"], 3, "unknown mode 'nope'; modes: weighted_sum (Weight sum), add_difference"),
        (["--mode", "cast"], 3, "unknown mode 'cast'; modes: weighted_sum (Weight sum), add_difference"),
        (["--mode", "ws", "--preset", "GRAD_V", "--blocks", "*=1"], 2, "either --blocks or --preset"),
        (["--mode", "ws", "--alpha", "x"], 2, "--alpha: 'x' is not a number"),
        (["--mode", "ws", "--alpha", "inf"], 2, "--alpha: 'inf' is not a finite number"),
        (["--mode", "ws", "--alpha", "0.5", "--beta", "nan"], 2, "--beta: 'nan' is not a finite number"),
    ],
)
def test_bad_parameters(sd1, tmp_path, args, code, message):
    out = tmp_path / "o.safetensors"
    proc = cli("merge", "--a", sd1[0], "--b", sd1[1], *args, "-o", out)
    assert proc.returncode == code, proc.stderr
    assert message in error_line(proc)
    assert os.listdir(tmp_path) == []


def test_bad_inputs_exit_4_and_leave_nothing(sd1, sdxl, tmp_path):
    cut = tmp_path / "cut.safetensors"
    cut.write_bytes(sd1[1].read_bytes()[:400_000])
    bad = tmp_path / "hdr.safetensors"
    bad.write_bytes(b"\xff" * 64)
    cases = [
        ([sd1[0], cut], "cut.safetensors is truncated"),
        ([sd1[0], bad], "hdr.safetensors has a corrupt header"),
        ([sd1[0], sdxl[0]], "model A is SD1"),
        ([sd1[0], tmp_path / "missing.safetensors"], "model not found"),
    ]
    for (a, b), message in cases:
        proc = cli("merge", "--a", a, "--b", b, "--mode", "ws", "-o", tmp_path / "out.safetensors")
        assert proc.returncode == 4, proc.stderr
        assert message in error_line(proc)
    assert sorted(os.listdir(tmp_path)) == ["cut.safetensors", "hdr.safetensors"]


def test_output_rules_exit_5(sd1, tmp_path):
    a = tmp_path / "a.safetensors"
    a.write_bytes(sd1[0].read_bytes())
    before = a.read_bytes()
    for extra in ([], ["--overwrite"]):
        proc = cli("merge", "--a", a, "--b", sd1[1], "--mode", "ws", "-o", a, *extra)
        assert proc.returncode == 5 and "output would overwrite input model A" in error_line(proc)
    assert a.read_bytes() == before
    out = tmp_path / "exists.safetensors"
    out.write_bytes(b"keep me")
    proc = cli("merge", "--a", a, "--b", sd1[1], "--mode", "ws", "-o", out)
    assert proc.returncode == 5 and "exists; choose another name or use --overwrite" in error_line(proc)
    assert out.read_bytes() == b"keep me"
    proc = cli("merge", "--a", a, "--b", sd1[1], "--mode", "ws", "-o", out, "--overwrite")
    assert proc.returncode == 0 and len(load(out)) == 1131
    assert sorted(os.listdir(tmp_path)) == ["a.safetensors", "exists.safetensors"]


def test_recipe_syntax_error_exit_3(tmp_path):
    r = tmp_path / "bad.alloy"
    r.write_text('alloy-recipe 1\nA = model("a")\nmerged = weighted_sum(A, A, alpha=1 + 2)\n')
    proc = cli("merge", r, "-o", tmp_path / "o.safetensors")
    assert proc.returncode == 3 and "line 3, col 35: operator '+' is not allowed" in error_line(proc)


def test_usage_errors_exit_2():
    proc = cli("merge", "--a", "x")
    assert proc.returncode == 2 and error_line(proc).startswith("error: merge needs")
    proc = cli("frobnicate")
    assert proc.returncode == 2 and error_line(proc).startswith("error:")


def test_global_options_after_the_subcommand(sd1, tmp_path):
    """--models-dir, --quiet and --no-progress work after `merge` as before it; autoprune keeps its own --models-dir."""
    recipe = tmp_path / "r.alloy"
    recipe.write_text(f'alloy-recipe 1\nA = model("{sd1[0].name}")\nB = model("{sd1[1].name}")\n'
                      "merged = weighted_sum(A, B, alpha=0.5)\n")  # fmt: skip
    folder = sd1[0].parent
    for n, args in enumerate(
        (["--models-dir", folder, "--quiet", "merge", recipe], ["merge", recipe, "--models-dir", folder, "--quiet"])
    ):
        proc = cli(*args, "-o", tmp_path / f"{n}.safetensors", "--no-history", "--no-progress")
        assert proc.returncode == 0, proc.stderr
        assert "note:" not in proc.stderr  # --quiet: only the hash and the path
    assert load(tmp_path / "0.safetensors").keys() == load(tmp_path / "1.safetensors").keys()
    proc = cli("merge", recipe, "-o", tmp_path / "2.safetensors", "--no-history")
    assert proc.returncode == 4 and sd1[0].name in error_line(proc)  # without --models-dir the names do not resolve
    assert "--no-progress" in cli("history", "list", "--help").stdout


def test_recipe_print_and_hash(sd1, tmp_path):
    r = tmp_path / "r.alloy"
    r.write_text(
        f'alloy-recipe 1\nbase = model("{sd1[0]}")\nother = model("{sd1[1]}")\n'
        "out = weighted_sum(base, other, alpha=0.3)\n"
    )
    printed = cli("recipe", "print", r)
    assert printed.returncode == 0, printed.stderr
    assert printed.stdout.splitlines()[-1] == "merged = weighted_sum(A, B, alpha=0.3)"
    digest = cli("recipe", "hash", r)
    assert digest.returncode == 0 and len(digest.stdout.strip()) == 64
    canon = tmp_path / "canon.alloy"
    canon.write_text(printed.stdout)
    assert cli("recipe", "print", canon).stdout == printed.stdout
    assert cli("recipe", "hash", canon).stdout == digest.stdout
    merged = cli("merge", r, "-o", tmp_path / "m.safetensors")
    assert merged.stdout.splitlines()[-2] == digest.stdout.strip()


def test_inspect_and_info(sd1, sdxl, models):
    proc = cli("inspect", sdxl[0])
    assert proc.returncode == 0
    assert "architecture: SDXL (sdxl)" in proc.stdout and "clip_g: 390 keys" in proc.stdout
    data = json.loads(cli("inspect", sd1[0], "--json").stdout)
    assert data["architecture"] == "sd1" and data["tensors"] == 1131 and data["dtypes"] == {"F16": 1130, "I64": 1}
    inpaint = cli("info", models("sd1_inpaint", arch="sd1", seed=5, input_channels=9)).stdout
    assert "SD1 inpainting" in inpaint
    assert "sdxl_refiner" in cli("info").stdout
    verbose = cli("info", "sdxl", "-v").stdout
    assert "M00: 226 keys" in verbose and "    model.diffusion_model.label_emb.0.0.weight" in verbose
    assert cli("info", "nonsense").returncode == 2


def test_ctrl_c_exits_130_and_leaves_no_temp_file(models, tmp_path):
    import signal
    import time

    a = models("sd1_big_a", arch="sd1", seed=41, scale=2)  # big enough that the write outlasts the polling
    b = models("sd1_big_b", arch="sd1", seed=42, scale=2)
    out_dir = tmp_path / "out"
    out_dir.mkdir()
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "lib_merge",
            "merge",
            "--a",
            str(a),
            "--b",
            str(b),
            "--mode",
            "ws",
            "--threads",
            "1",
            "-o",
            str(out_dir / "o.safetensors"),
        ],
        stderr=subprocess.PIPE,
        text=True,
        env=env,
    )
    deadline = time.monotonic() + 120
    while not any(".alloy-tmp-" in n for n in os.listdir(out_dir)):
        assert proc.poll() is None and time.monotonic() < deadline, "the merge never started writing"
        time.sleep(0.002)
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 130, err
    assert "error: cancelled" in err
    assert os.listdir(out_dir) == []


def test_cast_is_a_dtype_hint_left_out_of_the_hash(sd1, tmp_path):
    body = f'A = model("{sd1[0]}")\nB = model("{sd1[1]}")\nm1 = weighted_sum(A, B, alpha=0.5)\n'
    plain = tmp_path / "plain.alloy"
    plain.write_text("alloy-recipe 1\n" + body.replace("m1 =", "merged ="))
    hinted = tmp_path / "hinted.alloy"
    hinted.write_text("alloy-recipe 1\n" + body + 'merged = cast(m1, dtype="bf16")\n')
    printed = cli("recipe", "print", hinted)
    assert printed.returncode == 0 and 'merged = cast(m1, dtype="bf16")' in printed.stdout, printed.stderr
    hashes = [cli("recipe", "hash", p).stdout.strip() for p in (plain, hinted)]
    assert hashes[0] == hashes[1] and len(hashes[0]) == 64
    assert cli("merge", hinted, "-o", tmp_path / "h.safetensors").returncode == 0
    assert cli("merge", hinted, "--dtype", "fp32", "-o", tmp_path / "f.safetensors").returncode == 0
    hinted_out, forced = load(tmp_path / "h.safetensors"), load(tmp_path / "f.safetensors")
    key = "model.diffusion_model.out.2.weight"
    assert hinted_out[key].dtype == torch.bfloat16 and forced[key].dtype == torch.float32
    assert metadata(tmp_path / "h.safetensors")["alloy_recipe_hash"] == hashes[0]
    bad = tmp_path / "bad.alloy"
    bad.write_text("alloy-recipe 1\n" + body + 'merged = cast(m1, dtype="fp64")\n')
    failed = cli("recipe", "print", bad)
    assert failed.returncode != 0 and "must be one of fp16, bf16, fp32" in failed.stderr


def test_a_signal_inside_threadings_lock_code_waits_until_the_main_thread_leaves_it():
    """Raised in Condition.__enter__ (its lock taken, the caller's `with` not yet set up), Ctrl-C would leave the
    lock held and a pool worker waiting for it forever; the handler tries again once the main thread is out."""
    import signal
    import sys
    import threading
    import time

    from lib_merge.surfaces.cli import signals as cli_signals

    frames = []

    class Lock:  # a lock that notes who entered it: Condition.__enter__, in threading.py
        def __enter__(self):
            frames.append(sys._getframe(1))
            return True

        def __exit__(self, *exc):
            return False

        def acquire(self, *args):
            return True

        def release(self):
            pass

    with threading.Condition(Lock()):
        pass
    inside = frames[0]
    assert inside.f_code.co_name == "__enter__" and cli_signals.in_lock_code(inside)
    assert not cli_signals.in_lock_code(sys._getframe())

    noted: list[str] = []
    previous = cli_signals.handle_signals(noted)
    try:
        handle = signal.getsignal(signal.SIGINT)
        handle(signal.SIGINT, inside)  # deferred: no exception now, a retry timer instead
        assert noted == [] and signal.getitimer(signal.ITIMER_REAL)[0] > 0
        with pytest.raises(KeyboardInterrupt):
            time.sleep(1)  # the retry finds the main thread here, out of threading's code, and raises
        assert noted == ["cancelled"]
    finally:
        cli_signals.restore_signals(previous)
    assert signal.getitimer(signal.ITIMER_REAL)[0] == 0
