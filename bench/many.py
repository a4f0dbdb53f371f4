"""Many models in one pass: the many-model methods over 16 full-size SD1.5 inputs, side by side in one run.

    python bench/many.py [--mecha-python /path/to/venv/bin/python] [--only ties n_average] [--count 16]

Writes bench/models/sd1_a … sd1_p where missing (bench/make_models.py, 2.1 GB each). Then, in one run:
a baseline that reads every input once (16 MiB reads, through the page cache and past it: the faster
counts), and each method through the CLI as its own process (fp16 output to --out-dir; the inputs'
hashes cached beforehand, as after a model's first merge), and with --mecha-python sd-mecha on the same
files. The 16 files (34 GB) do not fit in the page cache, and each file's cached pages are dropped before
every run (posix_fadvise), so every run reads from disk. A baseline runs before every contender and once
after the last; a contender's ratio is to the mean of the baselines on its two sides, so drift in disk
speed cancels. Peak RSS from wait4.

Geometric median runs twice: max_iter=1 (the mean, and one Weiszfeld step: two passes over the inputs)
and the default (to convergence), so the cost of its further iterations shows apart. sd-mecha's geometric
median stops only on a 1e-20 change of its objective; it runs with maxiter=1 against Alloy's max_iter=1.
"""

from __future__ import annotations

import argparse
import mmap
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
sys.path.insert(0, str(HERE))
BUFFER = 16 << 20

# name: (Alloy's recipe expression over the roles, the sd-mecha recipe's name or None)
METHODS = {
    "ties": ("ties({all}, alpha=1.0, density=0.5)", "ties"),
    "dare_ties": ("dare_ties({all}, alpha=1.0, p=0.5, seed=0)", "dare_ties"),
    "model_stock": ("model_stock({all})", "model_stock"),
    "geometric_median_1": ("geometric_median({all}, max_iter=1)", "geometric_median_1"),
    "geometric_median": ("geometric_median({all})", None),
    "n_average": ("n_average({all})", "n_average"),
}


def read_once(paths: list[str], direct: bool) -> None:
    """The baseline: every input read once, whole, in 16 MiB reads; `direct`: past the page cache (O_DIRECT, into
    a page-aligned buffer), which on this virtual machine is the faster read and costs the CPU almost nothing."""
    buf = mmap.mmap(-1, BUFFER)
    view = memoryview(buf)
    flags = os.O_RDONLY | (getattr(os, "O_DIRECT", 0) if direct else 0)
    for path in paths:
        fd = os.open(path, flags)
        try:
            offset = 0
            while n := os.preadv(fd, [view], offset):
                offset += n
        finally:
            os.close(fd)


def mecha_merge(method: str, out: str, paths: list[str]) -> None:
    """The same merge in sd-mecha (run with its own python)."""
    import sd_mecha
    import torch
    from sd_mecha.extensions.builtin.merge_methods import linear

    base, *rest = models = [sd_mecha.model(p) for p in paths]
    deltas = [sd_mecha.subtract(m, base) for m in rest]
    recipes = {
        # its add_difference_ties wrapper fails on merge spaces in 1.1.8: the same recipe spelled out
        "ties": lambda: linear.add_difference(base, sd_mecha.ties_sum(*deltas, k=0.5, vote_sgn=True), alpha=1.0),
        "dare_ties": lambda: sd_mecha.add_ties_with_dare(base, *rest, probability=0.5, alpha=1.0, seed=0, k=1.0,
                                                         vote_sgn=True),
        "model_stock": lambda: sd_mecha.n_model_stock(base, *rest),
        "geometric_median_1": lambda: sd_mecha.geometric_median(*models, maxiter=1),
        "n_average": lambda: sd_mecha.n_average(*models),
    }  # fmt: skip
    sd_mecha.merge(recipes[method](), output=out, output_dtype=torch.float16)


def drop_cached(paths: list[Path]) -> None:
    """Evict these files' pages from the page cache (only theirs), so the next run reads them from disk."""
    os.sync()
    for path in paths:
        fd = os.open(path, os.O_RDONLY)
        try:
            os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
        finally:
            os.close(fd)


def measure(cmd: list[str], env: dict, inputs: list[Path], out: Path, limit: float | None = None) -> tuple:
    """(seconds, peak RSS in MB) of one process, started with the inputs out of the page cache; None for a
    run that failed or passed `limit` seconds (its error's end is printed)."""
    drop_cached(inputs)
    with tempfile.TemporaryFile() as log:
        start = time.perf_counter()
        proc = subprocess.Popen(cmd, env=env, stdout=log, stderr=log, cwd=ROOT)
        stopped = False
        while True:  # wait4 for the child's own peak RSS; polled, so a run past `limit` can be stopped
            pid, status, usage = os.wait4(proc.pid, os.WNOHANG)
            if pid:
                break
            if limit and time.perf_counter() - start > limit and not stopped:
                proc.kill()
                stopped = True
            time.sleep(0.05)
        seconds = time.perf_counter() - start
        proc.returncode = code = os.waitstatus_to_exitcode(status)
        out.unlink(missing_ok=True)
        if code != 0 or stopped:
            log.seek(0)
            sys.stderr.write(log.read().decode(errors="replace")[-3000:])
            print(f"  failed or stopped after {seconds:.0f} s: {' '.join(cmd[:5])} …", flush=True)
            return None
    return seconds, usage.ru_maxrss / 1024


def recipe_file(name: str, expr: str, inputs: list[Path], folder: Path) -> Path:
    """The contender's recipe, in a file named after it (two contenders may share a method)."""
    names = [f"M{i}" for i in range(len(inputs))]
    text = "alloy-recipe 1\n" + "".join(f'{n} = model("{p}")\n' for n, p in zip(names, inputs, strict=True))
    path = folder / f"many_{name}.alloy"
    path.write_text(text + f"merged = {expr.format(all=', '.join(names))}\n", encoding="utf-8")
    return path


def main() -> None:
    if len(sys.argv) > 1 and sys.argv[1] in ("--read-once", "--read-once-direct", "--mecha-run"):
        if sys.argv[1].startswith("--read-once"):
            read_once(sys.argv[2:], direct=sys.argv[1] == "--read-once-direct")
        else:
            mecha_merge(sys.argv[2], sys.argv[3], sys.argv[4:])
        return
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--count", type=int, default=16, help="inputs (roles a, b, …; at most 16)")
    ap.add_argument("--only", nargs="*", choices=list(METHODS), help="methods to run (default: all)")
    ap.add_argument("--mecha-python", help="a python with sd-mecha installed (its own environment)")
    ap.add_argument("--out-dir", type=Path, default=HERE / "models")
    ap.add_argument("--limit", type=float, default=1200, help="seconds a contender may run before it is stopped")
    args = ap.parse_args()
    from make_models import ROLES, make

    inputs = make("sd1", list(ROLES[: args.count]))
    home = tempfile.mkdtemp(prefix="alloy-many-home-")
    env = dict(os.environ, ALLOY_HOME=home, PYTHONPATH=str(ROOT))
    hashing = "import sys; from lib_merge.io.hashing import file_sha256; [file_sha256(p) for p in sys.argv[1:]]"
    subprocess.run([sys.executable, "-c", hashing, *map(str, inputs)], env=env, check=True)
    out = args.out_dir / "many_out.safetensors"
    contenders: list[tuple[str, list[str]]] = []
    others: list[tuple[str, list[str]]] = []
    for name in args.only or list(METHODS):
        expr, mecha = METHODS[name]
        recipe = recipe_file(name, expr, inputs, Path(home))
        cli = ["-m", "lib_merge", "--no-progress", "--quiet", "merge", str(recipe), "-o", str(out), "--dtype", "fp16"]
        contenders.append((f"alloy {name}", [sys.executable, *cli, "--overwrite", "--no-history"]))
        if mecha and args.mecha_python:  # after all of Alloy's
            others.append((f"mecha {name}", [args.mecha_python, __file__, "--mecha-run", mecha, str(out)]))
    contenders += others
    baselines = [[sys.executable, __file__, flag, *map(str, inputs)] for flag in ("--read-once", "--read-once-direct")]
    gib = sum(p.stat().st_size for p in inputs) / 2**30
    print(f"{len(inputs)} inputs, {gib:.1f} GiB; {os.cpu_count()} cores", flush=True)

    def read_both() -> tuple[float, float]:
        """A read of every input through the page cache and one past it, side by side; the faster is the baseline."""
        plain, direct = (measure(cmd, env, inputs, out) for cmd in baselines)
        print(f"  read once: {plain[0]:.1f} s through the page cache, {direct[0]:.1f} s past it", flush=True)
        return min(plain[0], direct[0]), max(plain[1], direct[1])

    reads = [read_both()]
    rows = []
    for name, cmd in contenders:
        mecha = name.startswith("mecha")
        measured = measure(cmd + ([str(p) for p in inputs] if mecha else []), env, inputs, out, args.limit)
        reads.append(read_both())
        if measured is None:
            continue
        seconds, rss = measured
        paired = (reads[-2][0] + reads[-1][0]) / 2
        rows.append((name, seconds, rss, seconds / paired))
        print(f"  {name}: {seconds:.1f} s, {rss:,.0f} MB peak RSS, {seconds / paired:.2f}x read once", flush=True)
    print(f"\ncontender                 time     x read once   peak RSS   (read once, the faster way: "
          f"{min(r for r, _ in reads):.1f} to {max(r for r, _ in reads):.1f} s)")  # fmt: skip
    for name, seconds, rss, ratio in rows:
        print(f"{name:24} {seconds:7.1f} s {ratio:8.2f}x   {rss / 1024:7.2f} GB")


if __name__ == "__main__":
    main()
