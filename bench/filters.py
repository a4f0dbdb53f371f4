"""smoothAdd on a full-size SD1.5 model: the filters against scipy's, and the merge against add difference.

    python bench/filters.py [--every 8]                         # the filters alone
    python bench/filters.py --merge [--old-checkout DIR] [--repeat 2]   # whole merges

--merge times, as CLI processes in one run (bench/methods.py's way: fp16 output, best of
--repeat after a warm-up), add_difference(A, B, C) (the baseline), smooth_add(A, B, C), and with
--old-checkout the same smooth_add run by another checkout of Alloy (the scipy median before this
change: `git worktree add DIR 008ef75`), once, after the others warmed the page cache.

Needs bench/models/<arch>_b and _c (python bench/make_models.py --roles a b c). For every
--every-th floating-point key of each rank (by name order) the difference B − C is filtered by
scipy.ndimage (median_filter size 3, then gaussian_filter σ 1: the old smoothAdd), by Alloy's numpy
arithmetic (filters.smooth(compiled=False)) and by its numba kernels (filters.smooth); the three
results must be equal. Prints per tensor rank the seconds of each (one thread, as each merge worker
runs one key) and the ratios to scipy, and the estimate for the whole model (the sums times --every).
"""

from __future__ import annotations

import argparse
import sys
import time
from collections import defaultdict
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import numpy as np  # noqa: E402
import torch  # noqa: E402
from safetensors import safe_open  # noqa: E402
from scipy.ndimage import gaussian_filter, median_filter  # noqa: E402

from bench.methods import recipe_file, run_once  # noqa: E402
from lib_merge.methods.filters import smooth  # noqa: E402

MERGES = ["add_difference(A, B, C, alpha=0.5)", "smooth_add(A, B, C, alpha=0.5)"]


def merges(repeat: int, old_checkout: Path | None) -> None:
    """Whole merges, each its own CLI process, against add difference in the same run."""
    folder = ROOT / "bench" / "models"
    out = folder / "bench_out.safetensors"
    print(f"SD1.5, three models, fp16 out; best of {repeat} after a warm-up")
    base = None
    for expr in MERGES:
        recipe = recipe_file(expr, folder)
        run_once(recipe, out)
        best = min(run_once(recipe, out) for _ in range(repeat))
        recipe.unlink()
        base = base or best
        print(f"  {expr:<40} {best:8.2f} s  {best / base:6.2f}x", flush=True)
    if old_checkout:
        recipe = recipe_file(MERGES[1], folder)
        seconds = run_once(recipe, out, cwd=old_checkout)
        recipe.unlink()
        print(f"  {MERGES[1] + ' (old checkout)':<40} {seconds:8.2f} s  {seconds / base:6.2f}x", flush=True)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--every", type=int, default=8)
    ap.add_argument("--arch", default="sd1")
    ap.add_argument("--merge", action="store_true", help="time whole merges instead of the filters")
    ap.add_argument("--repeat", type=int, default=2)
    ap.add_argument("--old-checkout", type=Path, help="another checkout of Alloy to run smooth_add with")
    args = ap.parse_args()
    if args.merge:
        return merges(args.repeat, args.old_checkout)
    torch.set_num_threads(1)
    models = ROOT / "bench" / "models"
    paths = [models / f"{args.arch}_{role}.safetensors" for role in "bc"]
    if not all(p.exists() for p in paths):
        sys.exit(f"missing {paths}: run python bench/make_models.py --arch {args.arch} --roles a b c")
    smooth(torch.ones(4, 4, 3, 3))  # numba's kernels compiled (or loaded from its cache) before the clock
    seconds: dict[str, list[float]] = defaultdict(lambda: [0.0] * 3 + [0])  # scipy, numpy, numba; elements
    with safe_open(paths[0], "pt") as b_file, safe_open(paths[1], "pt") as c_file:
        by_rank = defaultdict(list)  # every --every-th key of each rank, so that each rank is sampled
        for key in sorted(b_file.keys()):
            if b_file.get_slice(key).get_dtype() in ("F16", "BF16", "F32"):
                by_rank[len(b_file.get_slice(key).get_shape())].append(key)
        for key in [k for rank in sorted(by_rank) for k in by_rank[rank][:: args.every]]:
            d = b_file.get_tensor(key).float() - c_file.get_tensor(key).float()
            if not d.dim():
                continue
            row = seconds[f"{d.dim()}D" + ("" if d.dim() < 4 else f" {d.shape[2]}x{d.shape[3]}")]
            steps = (
                lambda x: gaussian_filter(median_filter(x.numpy(), size=3), sigma=1),
                lambda x: smooth(x, compiled=False).numpy(),
                lambda x: smooth(x).numpy(),
            )
            results = []
            for column, step in enumerate(steps):
                start = time.perf_counter()
                results.append(step(d))
                row[column] += time.perf_counter() - start
            row[3] += d.numel()
            if not all(np.array_equal(results[0], r) for r in results[1:]):
                sys.exit(f"{key}: the results differ")
    print(f"{args.arch}, every {args.every}th key of each rank, one thread; the results are equal on every key")
    print(f"{'rank':<8} {'elements':>12} {'scipy s':>9} {'numpy s':>9} {'ratio':>6} {'numba s':>9} {'ratio':>6}")
    total = [0.0] * 3
    for name, (*row, count) in sorted(seconds.items()):
        print(f"{name:<8} {count:>12,} {row[0]:>9.2f} {row[1]:>9.2f} {row[0] / row[1]:>5.1f}x "
              f"{row[2]:>9.2f} {row[0] / row[2]:>5.1f}x")  # fmt: skip
        total = [t + r for t, r in zip(total, row, strict=True)]
    print(f"smoothAdd's filters, whole model (x{args.every}): scipy {total[0] * args.every:.0f} s, "
          f"numpy {total[1] * args.every:.0f} s ({total[0] / total[1]:.1f}x faster), "
          f"numba {total[2] * args.every:.0f} s ({total[0] / total[2]:.1f}x faster)")  # fmt: skip


if __name__ == "__main__":
    main()
