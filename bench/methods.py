"""Cost of the modern methods and the cosine pre-pass, side by side with plain merges in one run.

    python bench/methods.py [--repeat 2] [--out-dir /dev/shm]

Needs bench/models/sd1_{a,b,c}.safetensors (python bench/make_models.py --arch sd1 --roles a b c).
Each merge runs as its own CLI process (fp16 output, hashes cached after the first run); the best
time of the repeats is reported with its ratio to the baseline of its group:
- three models: triple_sum (a plain weighted sum of A, B, C) against ties, dare, dare_ties;
- two models: weighted_sum against cosine_a (one extra read pass over A and B).
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
MODELS = ROOT / "bench" / "models"
GROUPS = {
    "three models": ["triple_sum(A, B, C, alpha=0.3, beta=0.3)", "ties(A, B, C)", "dare(A, B, C)",
                     "dare_ties(A, B, C)"],
    "two models": ["weighted_sum(A, B, alpha=0.3)", "cosine_a(A, B, alpha=0.3)"],
}  # fmt: skip


def recipe_text(expr: str, models: Path = MODELS, arch: str = "sd1") -> str:
    """A recipe of `expr` over <models>/<arch>_{a,b,c}.safetensors (also bench/gpu.py's)."""
    names = [n for n in "ABC" if f"{n}," in expr or f"{n})" in expr]
    text = "alloy-recipe 1\n" + "".join(f'{n} = model("{models}/{arch}_{n.lower()}.safetensors")\n' for n in names)
    return text + f"merged = {expr}\n"


def recipe_file(expr: str, folder: Path) -> Path:
    path = folder / f"bench_{expr.split('(')[0]}.alloy"
    path.write_text(recipe_text(expr), encoding="utf-8")
    return path


def run_once(recipe: Path, out: Path, cwd: Path = ROOT) -> float:
    """One merge as its own CLI process (of the checkout at `cwd`), in seconds."""
    subprocess.run(["sync"], check=True)
    start = time.perf_counter()
    subprocess.run(
        [sys.executable, "-m", "lib_merge", "--no-progress", "--quiet", "merge", str(recipe), "-o", str(out),
         "--overwrite", "--no-history"],
        cwd=cwd, check=True, stdout=subprocess.DEVNULL,
    )  # fmt: skip
    seconds = time.perf_counter() - start
    out.unlink()
    return seconds


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--repeat", type=int, default=2)
    ap.add_argument("--out-dir", type=Path, default=MODELS)
    ap.add_argument("--only", nargs="*", default=[], help="methods to time besides each group's baseline")
    args = ap.parse_args()
    missing = [p for p in (MODELS / f"sd1_{r}.safetensors" for r in "abc") if not p.exists()]
    if missing:
        sys.exit(f"missing {', '.join(map(str, missing))}: run python bench/make_models.py --arch sd1 --roles a b c")
    for group, exprs in GROUPS.items():
        print(f"{group} (best of {args.repeat}, SD1.5 size, fp16 out, {os.cpu_count()} cores):")
        base = None
        for n, expr in enumerate(exprs):
            if n and args.only and expr.split("(")[0] not in args.only:
                continue
            recipe = recipe_file(expr, args.out_dir)
            run_once(recipe, args.out_dir / "bench_out.safetensors")  # warm-up: hashes cached, pages read
            best = min(run_once(recipe, args.out_dir / "bench_out.safetensors") for _ in range(args.repeat))
            recipe.unlink()
            base = base or best
            print(f"  {expr:<45} {best:7.2f} s   {best / base:5.2f}x", flush=True)


if __name__ == "__main__":
    main()
