"""smoothAdd's filters on a full-size model: scipy's median against Alloy's, same tensors, same run.

    python bench/filters.py [--every 8] [--arch sd1]

Needs bench/models/<arch>_b and _c (python bench/make_models.py --roles a b c). For every
--every-th floating-point key of each rank (by name order) the difference B − C is filtered once by
scipy.ndimage (median_filter size 3, then gaussian_filter σ 1: the old smoothAdd) and once by
lib_merge.methods.filters.smooth; the results must be equal. Prints per tensor rank the seconds of
each (one thread each, as each merge worker runs one key) and the ratio, and the estimate for the
whole model (the sums times --every).
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

from lib_merge.methods.filters import median_filter3  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--every", type=int, default=8)
    ap.add_argument("--arch", default="sd1")
    args = ap.parse_args()
    torch.set_num_threads(1)
    models = ROOT / "bench" / "models"
    paths = [models / f"{args.arch}_{role}.safetensors" for role in "bc"]
    if not all(p.exists() for p in paths):
        sys.exit(f"missing {paths}: run python bench/make_models.py --arch {args.arch} --roles a b c")
    seconds: dict[str, list[float]] = defaultdict(lambda: [0.0, 0.0, 0.0, 0])
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
            start = time.perf_counter()
            old_median = median_filter(d.numpy(), size=3)
            row[0] += time.perf_counter() - start
            start = time.perf_counter()
            new_median = median_filter3(d).numpy()
            row[1] += time.perf_counter() - start
            start = time.perf_counter()
            gaussian_filter(new_median, sigma=1)
            row[2] += time.perf_counter() - start
            row[3] += d.numel()
            if not np.array_equal(old_median, new_median):
                sys.exit(f"{key}: the medians differ")
    print(f"{args.arch}, every {args.every}th key, one thread; the medians are equal on every key")
    print(f"{'rank':<8} {'elements':>12} {'scipy median s':>15} {'alloy median s':>15} {'ratio':>7} {'gaussian s':>11}")
    total = [0.0, 0.0, 0.0]
    for name, (old, new, gauss, count) in sorted(seconds.items()):
        print(f"{name:<8} {count:>12,} {old:>15.2f} {new:>15.2f} {old / new:>6.1f}x {gauss:>11.2f}")
        total = [total[0] + old, total[1] + new, total[2] + gauss]
    old_smooth, new_smooth = total[0] + total[2], total[1] + total[2]
    print(f"smoothAdd's filters, whole model (x{args.every}): scipy {old_smooth * args.every:.0f} s, "
          f"alloy {new_smooth * args.every:.0f} s: {old_smooth / new_smooth:.1f}x faster")  # fmt: skip


if __name__ == "__main__":
    main()
