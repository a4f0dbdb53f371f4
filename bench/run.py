"""Side-by-side merge benchmark: I/O baseline, naive whole-model merge, Alloy, sd-mecha.

    python bench/make_models.py            # once: full-size synthetic SD1.5 and SDXL checkpoints
    python bench/run.py [--arch sd1 sdxl] [--mode weighted_sum|add_difference] [--repeat 2] [--mecha-python PATH]
    python bench/make_models.py --arch flux && python bench/run.py --arch flux   # fp8 in, fp8 out

Every contender runs in its own process (wall time and peak RSS from wait4), on the same
inputs, after one warm-up read that puts both inputs in the page cache. By default Alloy finds
the inputs' sha256 in its hash cache, as it does for every merge after a model's first (the
WebUI caches these hashes too); --cold-hash empties the cache before each run, so hashing both
inputs (2 x 2 GB for SD1.5) is included. --out-dir /dev/shm takes the disk out of the figures.
Two I/O baselines: "io" writes plainly, "io-paced" with the early writeback Alloy's writer uses
(lib_merge/io/writeback.py), which on these machines is several times faster for large files.
Prints a table and the ratios alloy/io, alloy/io-paced, alloy/naive and alloy/mecha.
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
MODELS = HERE / "models"
OUTPUT_DTYPES = {"flux": "fp8_e4m3fn"}  # the inputs' own dtype, so the output is the size the io baselines write
NO_NAIVE = {"flux", "sd35_large"}  # loading both whole needs more RAM than the machine has


def measure(python: str, name: str, inputs: list[Path], out: Path, threads: int | None, env: dict) -> tuple:
    """(seconds, peak RSS in MB) of one contender process; the output is removed afterwards."""
    cmd = [python, str(HERE / "contenders.py"), name, str(out), "0.3", str(threads or 0), *map(str, inputs)]
    os.sync()  # the previous run's dirty pages are not charged to this one
    with tempfile.TemporaryFile() as log:
        start = time.perf_counter()
        proc = subprocess.Popen(cmd, env=env, stdout=log, stderr=log)
        _, status, usage = os.wait4(proc.pid, 0)
        seconds = time.perf_counter() - start
        proc.returncode = os.waitstatus_to_exitcode(status)
        if proc.returncode != 0:
            log.seek(0)
            sys.stderr.write(log.read().decode(errors="replace")[-4000:])
            raise SystemExit(f"{name} failed with exit code {proc.returncode}")
    if out.exists():
        out.unlink()
    return seconds, usage.ru_maxrss / 1024


def warm(paths: list[Path]) -> None:
    buf = bytearray(16 << 20)
    for p in paths:
        with open(p, "rb", buffering=0) as f:
            while f.readinto(buf):
                pass


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--arch", nargs="+", default=["sd1", "sdxl"])
    ap.add_argument("--mode", choices=["weighted_sum", "add_difference"], default="weighted_sum",
                    help="add_difference reads a third model, <arch>_c")  # fmt: skip
    ap.add_argument("--repeat", type=int, default=2, help="runs per contender; the best time is reported")
    ap.add_argument("--threads", type=int, default=None)
    ap.add_argument("--skip", nargs="*", default=[], help="leave out: import, io, io-paced, naive, alloy, mecha")
    ap.add_argument("--mecha-python", help="a python with sd-mecha installed (its own environment)")
    ap.add_argument("--out-dir", type=Path, default=MODELS)
    ap.add_argument("--cold-hash", action="store_true", help="Alloy hashes its inputs in every run")
    args = ap.parse_args()

    contenders = [c for c in ("import", "io", "io-paced", "naive", "alloy") if c not in args.skip]
    if args.mecha_python and "mecha" not in args.skip:
        contenders.append("mecha")
    rows = []
    for arch in args.arch:
        roles = "abc" if args.mode == "add_difference" else "ab"
        inputs = [MODELS / f"{arch}_{r}.safetensors" for r in roles]
        missing = [str(p) for p in inputs if not p.exists()]
        if missing:
            raise SystemExit(f"missing {', '.join(missing)}: run bench/make_models.py --arch {arch} --roles a b c")
        out = args.out_dir / f"{arch}_bench_out.safetensors"
        warm(inputs)
        shared_home = tempfile.mkdtemp(prefix="alloy-bench-home-")
        if not args.cold_hash:
            subprocess.run(
                [
                    sys.executable,
                    "-c",
                    "import sys; from lib_merge.io.hashing import file_sha256; [file_sha256(p) for p in sys.argv[1:]]",
                    *map(str, inputs),
                ],
                env=dict(os.environ, ALLOY_HOME=shared_home, PYTHONPATH=str(HERE.parent)),
                check=True,
            )
        results: dict[str, tuple[float, float]] = {}
        runs: dict[str, list[float]] = {}
        for _ in range(args.repeat):
            for name in contenders:
                home = tempfile.mkdtemp(prefix="alloy-bench-home-") if args.cold_hash else shared_home
                env = dict(os.environ, ALLOY_HOME=home, ALLOY_BENCH_DTYPE=OUTPUT_DTYPES.get(arch, "fp16"))
                if name == "naive" and arch in NO_NAIVE:
                    continue
                python = args.mecha_python if name == "mecha" else sys.executable
                seconds, rss = measure(python, name, inputs, out, args.threads, env)
                if args.cold_hash:
                    shutil.rmtree(home, ignore_errors=True)
                runs.setdefault(name, []).append(seconds)
                best = results.get(name)
                results[name] = (min(seconds, best[0]) if best else seconds, max(rss, best[1]) if best else rss)
                print(f"{arch} {name}: {seconds:.2f} s, peak RSS {rss:,.0f} MB", flush=True)
        rows.append((arch, results, runs))
        shutil.rmtree(shared_home, ignore_errors=True)

    print("\narch   contender   best time   peak RSS")
    for arch, results, runs in rows:
        for name, (seconds, rss) in results.items():
            print(f"{arch:6} {name:10} {seconds:8.2f} s {rss:8,.0f} MB")
        if "alloy" in results:
            t, m = results["alloy"]
            if "import" in results and "io" in results:
                merge_only = t - results["import"][0]
                print(
                    f"{arch:6} alloy without interpreter and torch start-up: {merge_only:.2f} s, "
                    f"{merge_only / results['io'][0]:.2f}x io"
                )
            for base in ("io", "io-paced", "naive", "mecha"):
                if base in results:
                    bt, bm = results[base]
                    # Disk speed drifts during a run: the ratio of runs made back to back is steadier.
                    paired = statistics.median(x / y for x, y in zip(runs["alloy"], runs[base]))
                    print(
                        f"{arch:6} alloy/{base:6} time {t / bt:5.2f}x (best/best), {paired:5.2f}x (median of "
                        f"paired runs)   RSS {m / bm:5.2f}x"
                    )


if __name__ == "__main__":
    main()
