"""Modern and N-model methods against references written here from the formulas."""

from __future__ import annotations

import hashlib
import math

import numpy as np
import pytest
import torch
from helpers import load
from test_calc import KEYS, f64
from test_merge import merge

from lib_merge.engine.options import EngineOptions
from lib_merge.errors import InvalidComboError, RecipeTypeError
from lib_merge.methods import modern
from lib_merge.recipe import parse_recipe, print_recipe
from lib_merge.recipe.form import MethodSettings, build_method_recipe


@pytest.fixture(scope="module")
def four(models, sd1_fp32):
    return [*sd1_fp32, models("sd1f_d", arch="sd1", seed=24, dtype=torch.float32)]


def run(method: str, paths, tmp_path, name="m", threads=None, **params) -> dict[str, torch.Tensor]:
    roots = "ABCDEFGH"[: len(paths)]
    lines = ["alloy-recipe 1"] + [f'{n} = model("{p}")' for n, p in zip(roots, paths, strict=True)]
    args = ", ".join(list(roots) + [f"{k}={v!r}" if isinstance(v, str) else f"{k}={v}" for k, v in params.items()])
    lines.append(f"merged = {method}({args})")
    engine = EngineOptions(threads=threads) if threads else None
    return load(merge("\n".join(lines) + "\n", tmp_path / f"{name}.safetensors", torch.float32, engine=engine).path)


def mask(seed: int, stream: int, key: str, shape, keep) -> np.ndarray:
    """The generator of (seed, stream, key); a draw below the keep probability keeps."""
    digest = hashlib.sha256(f"{seed}:{stream}:{key}".encode()).digest()
    gen = torch.Generator().manual_seed(int.from_bytes(digest[:8], "little") & ((1 << 63) - 1))
    return torch.rand(tuple(shape), generator=gen, dtype=torch.float32).double().numpy() < keep


def elect(deltas: list[np.ndarray], sign: str = "sum") -> np.ndarray:
    stack = np.stack(deltas)
    sigma = np.sign(stack.sum(0) if sign == "sum" else np.sign(stack).sum(0))
    agree = (np.sign(stack) == sigma) & (stack != 0) & (sigma != 0)
    return (stack * agree).sum(0) / np.maximum(agree.sum(0), 1)


def trim(d: np.ndarray, density: float) -> np.ndarray:
    k = math.ceil(density * d.size)
    threshold = np.sort(np.abs(d).ravel())[::-1][k - 1]
    return np.where(np.abs(d) >= threshold, d, 0)


def test_spec_numeric_checks():
    base = torch.zeros(4)
    d1, d2 = torch.tensor([4.0, -3, 2, -1]), torch.tensor([-2.0, 1, 3, 0.5])
    assert modern.ties(base, d1.clone(), d2.clone(), alpha=1, density=0.5, sign="sum").tolist() == [4, -3, 3, 0]
    s = modern.slerp(torch.tensor([1.0, 0]), torch.tensor([0.0, 2]), alpha=0.5)
    assert s.tolist() == pytest.approx([1.0607, 1.0607], abs=1e-4)
    gm = modern.geometric_median(torch.tensor(0.0), torch.tensor(1.0), torch.tensor(10.0), eps=1e-6, max_iter=100)
    assert float(gm) == pytest.approx(1.0, abs=1e-4)
    b = torch.zeros(2)
    orthogonal = modern.model_stock(b.clone(), torch.tensor([1.0, 0]), torch.tensor([0.0, 1]))
    assert orthogonal.tolist() == [0, 0]
    same = modern.model_stock(b.clone(), torch.tensor([1.0, 2]), torch.tensor([1.0, 2]))
    assert same.tolist() == pytest.approx([1, 2])
    assert modern.clip(torch.tensor([3.5]), torch.tensor([1.0]), torch.tensor([3.0])).tolist() == [3]
    perp = modern.add_perpendicular(torch.tensor([1.0, 0]), torch.tensor([1.0, 1]), torch.zeros(2), alpha=1)
    assert perp.tolist() == [1, 1]


def test_ties_dare_della_on_models(four, tmp_path):
    t = {k: [f64(load(p)[k]) for p in four] for k in KEYS}
    ties = run("ties", four, tmp_path, "ties", alpha=0.8, density=0.3, sign="count")
    dare = run("dare", four, tmp_path, "dare", alpha=0.7, p=0.4, seed=5)
    della = run("della", four, tmp_path, "della", alpha=0.9, density=0.4, epsilon=0.2, seed=3, elect=True)
    for key in KEYS:
        base, *ms = t[key]
        deltas = [m - base for m in ms]
        expected = base + 0.8 * elect([trim(d, 0.3) for d in deltas], "count")
        np.testing.assert_allclose(f64(ties[key]), expected, rtol=1e-5, atol=1e-6, err_msg=f"ties {key}")
        kept = [d * mask(5, i, key, d.shape, 0.6) / 0.6 for i, d in enumerate(deltas)]
        np.testing.assert_allclose(f64(dare[key]), base + 0.7 * sum(kept), rtol=1e-5, atol=1e-6, err_msg=key)
        della_kept = []
        for i, d in enumerate(deltas):
            ranks = np.empty(d.size)
            ranks[np.argsort(np.abs(d).ravel(), kind="stable")] = np.arange(d.size)
            q = np.clip(0.4 - 0.2 + 0.4 * ranks / (d.size - 1), 1e-6, 1).reshape(d.shape)
            della_kept.append(d * mask(3, i, key, d.shape, q.astype(np.float32)) / q)
        np.testing.assert_allclose(f64(della[key]), base + 0.9 * elect(della_kept), rtol=1e-4, atol=1e-5, err_msg=key)


def test_seeded_methods_give_the_same_bytes_on_any_thread_count(four, tmp_path):
    one = run("dare_ties", four, tmp_path, "t1", threads=1, p=0.3, seed=9)
    many = run("dare_ties", four, tmp_path, "t4", threads=4, p=0.3, seed=9)
    assert all(torch.equal(one[k], many[k]) for k in one)
    other = run("dare_ties", four, tmp_path, "t5", p=0.3, seed=10)
    assert not torch.equal(other[KEYS[0]], one[KEYS[0]])


def test_slerp_median_stock_perpendicular_average_task(four, tmp_path):
    t = {k: [f64(load(p)[k]) for p in four] for k in KEYS}
    out = {
        "slerp": run("slerp", four[:2], tmp_path, "s", alpha=0.3),
        "gm": run("geometric_median", four, tmp_path, "g"),
        "stock": run("model_stock", four, tmp_path, "k"),
        "perp": run("add_perpendicular", four[:3], tmp_path, "p", alpha=0.6),
        "avg": run("n_average", four, tmp_path, "a"),
        "task": run("task_arithmetic", four, tmp_path, "t", alpha=0.4),
    }
    for key in KEYS:
        a, b, c, d = t[key]
        na, nb = np.linalg.norm(a), np.linalg.norm(b)
        omega = math.acos(np.clip((a / na * b / nb).sum(), -1, 1))
        slerp = (
            (math.sin(0.7 * omega) * a / na + math.sin(0.3 * omega) * b / nb) / math.sin(omega) * (0.7 * na + 0.3 * nb)
        )
        x = np.mean([a, b, c, d], axis=0)
        for _ in range(100):
            w = np.array([1 / max(np.linalg.norm(x - m), 1e-8) for m in (a, b, c, d)])
            new = sum(wi * m for wi, m in zip(w, (a, b, c, d), strict=True)) / w.sum()
            stop = np.linalg.norm(new - x) <= 1e-6 * max(np.linalg.norm(x), 1)
            x = new
            if stop:
                break
        deltas = [m - a for m in (b, c, d)]
        cos = [
            (deltas[i] * deltas[j]).sum() / (np.linalg.norm(deltas[i]) * np.linalg.norm(deltas[j]))
            for i in range(3)
            for j in range(i + 1, 3)
        ]
        cm = np.mean(cos)
        tt = 3 * cm / (1 + 2 * cm)
        u, v = a - c, b - c
        perp = v - u * (u * v).sum() / (u * u).sum()
        expected = {
            "slerp": slerp,
            "gm": x,
            "stock": tt * np.mean([b, c, d], axis=0) + (1 - tt) * a,
            "perp": a + 0.6 * perp,
            "avg": np.mean([a, b, c, d], axis=0),
            "task": a + 0.4 * sum(deltas),
        }
        for name, value in expected.items():
            np.testing.assert_allclose(f64(out[name][key]), value, rtol=1e-4, atol=1e-5, err_msg=f"{name} {key}")


def test_cli_method_flags_equal_the_recipe(four, tmp_path):
    from test_cli import cli

    out = tmp_path / "cli.safetensors"
    proc = cli("merge", "--a", four[0], "--models", *four[1:], "--method", "dare", "--p", "0.3", "--seed", "4",
               "--alpha", "0.5", "-o", out, "--no-history")  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    text = "alloy-recipe 1\n" + "".join(f'{n} = model("{p}")\n' for n, p in zip("ABCD", four, strict=True))
    text += "merged = dare(A, B, C, D, alpha=0.5, p=0.3, seed=4)\n"
    same = merge(text, tmp_path / "recipe.safetensors")
    assert proc.stdout.splitlines()[-2] == same.recipe_hash
    expected = load(same.path)
    assert all(torch.equal(t, expected[k]) for k, t in load(out).items())
    bad = cli("merge", "--a", four[0], "--models", four[1], "--method", "slerp", "--density", "0.2", "-o", out)
    assert bad.returncode == 3 and "slerp() has no parameter 'density'; parameters: alpha (0.5)" in bad.stderr


def test_model_counts_are_checked():
    """64 models besides A for the methods that read a slice at a time, 16 for the others; the message says which."""
    many = [f"m{i}" for i in range(64)]
    assert len(build_method_recipe(MethodSettings("a", many, "n_average")).inputs) == 65
    with pytest.raises(InvalidComboError, match=r"^n_average takes at most 64 models besides A, got 65$"):
        build_method_recipe(MethodSettings("a", [*many, "m64"], "n_average"))
    assert len(build_method_recipe(MethodSettings("a", many[:16], "task_arithmetic")).inputs) == 17
    with pytest.raises(InvalidComboError, match=r"^task_arithmetic takes at most 16 models besides A \(it holds all"):
        build_method_recipe(MethodSettings("a", many[:17], "task_arithmetic"))
    with pytest.raises(InvalidComboError, match="slerp takes 1 models besides A, got 2"):
        build_method_recipe(MethodSettings("a", ["b", "c"], "slerp"))

    def recipe(method: str, count: int) -> str:
        text = "alloy-recipe 1\n" + "".join(f'M{i} = model("m{i}")\n' for i in range(count))
        return text + f"merged = {method}(" + ", ".join(f"M{i}" for i in range(count)) + ")\n"

    for method in ("ties", "dare", "dare_ties", "model_stock", "geometric_median", "n_average"):
        assert len(parse_recipe(recipe(method, 65)).inputs) == 65
        with pytest.raises(RecipeTypeError, match=f"got 66: {method} takes at most 64 models besides A$"):
            parse_recipe(recipe(method, 66))
    for method in ("della", "task_arithmetic"):
        assert len(parse_recipe(recipe(method, 17)).inputs) == 17
        with pytest.raises(RecipeTypeError, match=f"got 18: {method} takes at most 16 models besides A .*ties, dare"):
            parse_recipe(recipe(method, 18))
    with pytest.raises(RecipeTypeError, match="must be one of sum, count, mean"):
        parse_recipe('alloy-recipe 1\nA = model("a")\nB = model("b")\nmerged = ties(A, B, sign="most")\n')


def test_task_arithmetic_with_one_alpha_per_model(four, tmp_path):
    out = run("task_arithmetic", four, tmp_path, "ta", alpha=[0.2, -0.5, 0.9])
    for key in KEYS:
        a, b, c, d = (f64(load(p)[key]) for p in four)
        expected = a + 0.2 * (b - a) - 0.5 * (c - a) + 0.9 * (d - a)
        np.testing.assert_allclose(f64(out[key]), expected, rtol=1e-4, atol=1e-5, err_msg=key)
    text = "alloy-recipe 1\n" + "".join(f'{n} = model("{p}")\n' for n, p in zip("ABCD", four, strict=True))
    printed = print_recipe(parse_recipe(text + "merged = task_arithmetic(A, B, C, D, alpha=[0.2, -0.5, 0.9])\n"))
    assert "merged = task_arithmetic(A, B, C, D, alpha=[0.2, -0.5, 0.9])" in printed
    with pytest.raises(RecipeTypeError, match=r"one number per model after the base \(3\)"):
        parse_recipe(text + "merged = task_arithmetic(A, B, C, D, alpha=[0.2, 0.5])\n")


def test_n_average_with_weights(four, tmp_path):
    out = run("n_average", four, tmp_path, "w", weights=[1, 3, 0, 4])
    for key in KEYS:
        a, b, c, d = (f64(load(p)[key]) for p in four)
        np.testing.assert_allclose(f64(out[key]), (a + 3 * b + 4 * d) / 8, rtol=1e-4, atol=1e-5, err_msg=key)
    text = "alloy-recipe 1\n" + "".join(f'{n} = model("{p}")\n' for n, p in zip("ABCD", four, strict=True))
    assert "n_average(A, B, C, D, weights=1.0)" in print_recipe(parse_recipe(text + "merged = n_average(A, B, C, D)\n"))
    with pytest.raises(RecipeTypeError, match=r"one number per model \(4\)"):
        parse_recipe(text + "merged = n_average(A, B, C, D, weights=[1, 2])\n")


@pytest.mark.parametrize(
    "case", ["normal", "ties", "constant", "small_k", "large_k", "skewed", "zeros_and_nan", "tiny"]
)
@pytest.mark.parametrize("path", ["torch", "numba", "one_slice"])
def test_trim_thresholds_are_exact(case, path, monkeypatch):
    """TIES's trim threshold, each model's k-th largest |δ|, from the counts of the bits over the slices
    (numba's kernels or torch's bincount) or, for a key of one slice, partitioned whole: exactly what a
    full sort gives, a NaN counted above +inf as a sort puts it."""
    import numpy as np

    from lib_merge.methods import many, operand
    from lib_merge.methods.operand import Operand

    rng = np.random.default_rng(7)
    n = 300_000
    values = {
        "normal": np.abs(rng.standard_normal(n)),
        "ties": rng.integers(0, 5, n).astype(np.float32),
        "constant": np.full(n, 0.25, np.float32),
        "small_k": np.abs(rng.standard_normal(n)),
        "large_k": np.abs(rng.standard_normal(n)),
        "skewed": np.abs(rng.standard_cauchy(n)),
        "zeros_and_nan": np.where(rng.random(n) < 0.3, 0.0, np.abs(rng.standard_normal(n))),
        "tiny": np.abs(rng.standard_normal(n)) * 1e-40,  # subnormal in float32
    }[case].astype(np.float32)
    if case == "zeros_and_nan":
        values[:7], values[7:9] = np.nan, np.inf
    base = torch.zeros(n)  # |m − 0|: the values themselves
    signs = torch.from_numpy(np.where(rng.random(n) < 0.5, -1, 1).astype(np.float32))
    models = [torch.from_numpy(values), torch.from_numpy(values[::-1].copy()) * signs]
    if path == "torch":
        monkeypatch.setattr(many, "_compiled", lambda like: None)
    if path == "one_slice":
        monkeypatch.setattr(operand, "MAX_SLICE", n)
        monkeypatch.setattr(operand, "STREAM_ELEMENTS", 3 * n)
    ordered = np.sort(values)
    ks = {"small_k": [1, 2, 17], "large_k": [n - 1, n - 2], "zeros_and_nan": [1, 7, 8, 9, 10, n // 2, n - 1]}
    for k in ks.get(case, [n // 2, n // 10, n // 3 + 1]):
        got = many.trim_thresholds(Operand(base), [Operand(m) for m in models], (k - 0.5) / n)  # ⌈density·n⌉ = k
        expected = ordered[n - k]
        for limit in got:  # both models hold the same magnitudes
            assert limit == expected or (np.isnan(limit) and np.isnan(expected)), (case, k, limit)
