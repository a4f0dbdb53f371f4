"""Live merges into a loaded model, side by side with the copy bound and a file merge, in one run.

    python bench/live.py [--arch sd1 sdxl] [--dtype fp16 fp32] [--repeat 3] [--cache-gb auto]

Needs bench/models/<arch>_{a,b,c}.safetensors (python bench/make_models.py --roles a b c).
Each (arch, parameter dtype) case runs in its own process: a torch module holding model A as
the WebUI holds it (bench/live_host.py), one Workbench on a host whose generation costs nothing.
In that process, inputs in the page cache and their hashes known (as after any earlier merge):
- file merge: the same recipe written to a file (fp16) by the same engine, in process;
- first live merge: the first after the checkpoint load (no backups, empty RAM cache);
- repeated live merges, median of --repeat: alpha changes only; a block vector changes;
  model B changes (B and C alternate, both read once before);
- copy bound: every patched parameter copied once from RAM (what Restore does).
Peak RSS above the loaded model's own (VmHWM, reset before the first live merge) is set against the RAM cache
budget plus 1 GB. Ratios are taken within the same process. Last, the cost of memory the process never had
(s/GB): a first live merge allocates its backups and the RAM cache's copy of B, a file merge neither.
"""

from __future__ import annotations

import argparse
import json
import mmap
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

from live_host import StubHost, load_live_module, trim_heap  # noqa: E402

from lib_merge.app.cache_budget import parse_cache_budget  # noqa: E402
from lib_merge.app.workbench import MergeRequest, Workbench  # noqa: E402
from lib_merge.engine.options import EngineOptions  # noqa: E402
from lib_merge.engine.to_file import SaveOptions, merge_to_file  # noqa: E402
from lib_merge.recipe.form import MergeSettings  # noqa: E402

MODELS = ROOT / "bench" / "models"
DTYPES = {"fp16": torch.float16, "fp32": torch.float32}
VECTORS = {
    "sd1": ["0.1,0.2,0.3,0.4,0.5,0.6,0.7,0.8,0.9,1,0.9,0.8,0.7,0.6,0.5,0.4,0.3,0.2,0.1,0,0.1,0.2,0.3,0.4,0.5,0.6",
            "0.6,0.5,0.4,0.3,0.2,0.1,0,0.1,0.2,0.3,0.4,0.5,0.6,0.7,0.8,0.9,1,0.9,0.8,0.7,0.6,0.5,0.4,0.3,0.2,0.1"],
    "sdxl": ["0.1,0.2,0.3,0.4,0.5,0.6,0.7,0.8,0.9,1,0.9,0.8,0.7,0.6,0.5,0.4,0.3,0.2,0.1,0",
             "0.6,0.5,0.4,0.3,0.2,0.1,0,0.1,0.2,0.3,0.4,0.5,0.6,0.7,0.8,0.9,1,0.9,0.8,0.7"],
}  # fmt: skip


def rss(field: str) -> int:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1]) * 1024
    raise RuntimeError(field)


def reset_peak() -> None:
    with open("/proc/self/clear_refs", "w") as f:
        f.write("5")


def fresh_memory_s_per_gb(size: int = 1 << 30) -> float:
    """Seconds per GB to fault in memory the process never had: each new backup and cache byte of a
    first merge costs this (high on a VM that hands freed memory back to its host)."""
    with mmap.mmap(-1, size) as region:
        pages = torch.frombuffer(region, dtype=torch.uint8)
        start = time.perf_counter()
        pages.fill_(1)
        seconds = time.perf_counter() - start
        del pages
    return seconds / (size / 1e9)


def timed(workbench: Workbench, settings: MergeSettings) -> float:
    start = time.perf_counter()
    outcome = workbench.merge(MergeRequest(settings=settings))
    seconds = time.perf_counter() - start
    assert outcome.merged, outcome.message
    return seconds


def run_case(arch: str, dtype_name: str, repeat: int, cache_gb: str) -> dict:
    names = [f"{arch}_{r}.safetensors" for r in "abc"]
    module = load_live_module(MODELS / names[0], DTYPES[dtype_name])
    model_bytes = sum(p.numel() * p.element_size() for p in module.parameters())
    result: dict = {"arch": arch, "dtype": dtype_name, "model_gb": model_bytes / 1e9}
    with tempfile.TemporaryDirectory() as data:
        host = StubHost(MODELS, module, names[0], Path(data), cache_gb)
        workbench = Workbench(host)
        budget = parse_cache_budget(cache_gb)
        result["cache_budget_gb"] = budget / 1e9

        def form(alpha: float, b: str = names[1], vector: str | None = None) -> MergeSettings:
            return MergeSettings(names[0], b, alpha=alpha, blocks=vector)

        # A file merge of the first live merge's recipe, by the same engine in this process.
        out = MODELS / f"{arch}_live_bench_out.safetensors"
        recipe = workbench.recipe_of(MergeRequest(settings=form(0.3)))
        start = time.perf_counter()
        merge_to_file(recipe, SaveOptions(str(out), dtype=torch.float16, overwrite=True), EngineOptions())
        result["file_merge_s"] = time.perf_counter() - start
        out.unlink()
        trim_heap()
        base_rss = rss("VmRSS")  # the loaded model (the file merge's mapped pages are gone with it)
        reset_peak()

        result["first_live_s"] = timed(workbench, form(0.3))
        timed(workbench, form(0.3, b=names[2]))  # C read once: "B changes" below finds both in the cache
        alphas = [timed(workbench, form(0.31 + i / 100)) for i in range(repeat)]
        vectors = [timed(workbench, form(0.5, vector=VECTORS[arch][i % 2])) for i in range(repeat)]
        swaps = [timed(workbench, form(0.5, b=names[1 + (i + 1) % 2])) for i in range(repeat)]
        result["runs_s"] = {"alpha": alphas, "vector": vectors, "b_changes": swaps}
        result["repeat_alpha_s"] = statistics.median(alphas)
        result["repeat_vector_s"] = statistics.median(vectors)
        result["repeat_b_changes_s"] = statistics.median(swaps)

        copies = []
        for _ in range(repeat):
            workbench.merge(MergeRequest(settings=form(0.2 + len(copies) / 100)))
            start = time.perf_counter()
            patched = workbench.backup.restore(module)
            copies.append(time.perf_counter() - start)
        result["patched"] = patched
        result["copy_bound_s"] = statistics.median(copies)
        stats = workbench.cache_stats()
        result["cache_used_gb"] = stats.bytes_used / 1e9 if stats else 0.0
        result["backups_gb"] = workbench.backup.nbytes / 1e9
    result["peak_above_model_gb"] = (rss("VmHWM") - base_rss) / 1e9
    result["fresh_memory_s_per_gb"] = fresh_memory_s_per_gb()
    return result


def report(rows: list[dict]) -> None:
    print("\n| case | file merge s | first live s | ×file | repeat: alpha s | ×copy | block vector s | B changes s "
          "| copy bound s | peak above model GB | budget + 1 GB | fresh memory s/GB |")  # fmt: skip
    print("|---|---|---|---|---|---|---|---|---|---|---|---|")
    for r in rows:
        copy = r["copy_bound_s"]
        print(
            f"| {r['arch']} {r['dtype']} ({r['patched']} tensors) | {r['file_merge_s']:.2f} | {r['first_live_s']:.2f} "
            f"| {r['first_live_s'] / r['file_merge_s']:.2f}× | {r['repeat_alpha_s']:.2f} "
            f"| {r['repeat_alpha_s'] / copy:.2f}× | {r['repeat_vector_s']:.2f} ({r['repeat_vector_s'] / copy:.2f}×) "
            f"| {r['repeat_b_changes_s']:.2f} ({r['repeat_b_changes_s'] / copy:.2f}×) | {copy:.2f} "
            f"| {r['peak_above_model_gb']:.2f} (backups {r['backups_gb']:.2f}, cache {r['cache_used_gb']:.2f}) "
            f"| {r['cache_budget_gb'] + 1:.2f} | {r['fresh_memory_s_per_gb']:.2f} |"
        )


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--arch", nargs="+", default=["sd1", "sdxl"], choices=["sd1", "sdxl"])
    ap.add_argument("--dtype", nargs="+", default=["fp16", "fp32"], choices=list(DTYPES))
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--cache-gb", default="auto", help="the RAM cache budget, as the WebUI setting takes it")
    ap.add_argument("--case", nargs=2, metavar=("ARCH", "DTYPE"), help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.case:
        print("RESULT " + json.dumps(run_case(*args.case, args.repeat, args.cache_gb)), flush=True)
        return
    missing = [p for a in args.arch for r in "abc" if not (p := MODELS / f"{a}_{r}.safetensors").exists()]
    if missing:
        sys.exit(f"missing {', '.join(map(str, missing))}: run python bench/make_models.py --roles a b c")
    home = tempfile.mkdtemp(prefix="alloy-bench-home-")
    env = dict(os.environ, ALLOY_HOME=home, PYTHONPATH=str(ROOT))
    rows = []
    for arch in args.arch:
        paths = [str(MODELS / f"{arch}_{r}.safetensors") for r in "abc"]
        # Hashes known and pages cached, as for any merge after a model's first.
        code = "import sys; from lib_merge.io.hashing import file_sha256; [file_sha256(p) for p in sys.argv[1:]]"
        subprocess.run([sys.executable, "-c", code, *paths], env=env, check=True)
        for dtype in args.dtype:
            cmd = [sys.executable, __file__, "--case", arch, dtype, "--repeat", str(args.repeat)]
            proc = subprocess.run(cmd + ["--cache-gb", args.cache_gb], env=env, capture_output=True, text=True)
            line = next((x for x in proc.stdout.splitlines() if x.startswith("RESULT ")), None)
            if proc.returncode != 0 or line is None:
                sys.exit(f"{arch} {dtype} failed:\n{proc.stderr[-3000:]}")
            rows.append(json.loads(line[len("RESULT ") :]))
            print(json.dumps(rows[-1]), flush=True)
    report(rows)


if __name__ == "__main__":
    main()
