"""The GPU path, measured: file merge, live merge, methods and LoRA extraction on one device, every row a
ratio to a baseline measured in the same run.

    python bench/gpu.py --device cuda [--arch sd1] [--repeat 2] [--models bench/models]
    python bench/gpu.py --device cpu      # the same tables on the CPU (tests/test_gpu_bench.py: miniatures)

Needs <models>/<arch>_{a,b,c}.safetensors (python bench/make_models.py --arch sd1 --roles a b c). All of it
runs in this one process (CUDA starts once), after a warm-up merge: inputs in the page cache, their hashes
cached. Times are the best of --repeat (live merges: the median), each table against its own baseline:
- file merge: weighted sum of A and B into fp16 against the plain I/O of the same bytes (bench/contenders.py
  io_baseline: read A and B, write A's size, fsync); on a GPU, the CPU's merge beside it and whether the two
  files hold the same bytes;
- live merge: a torch module holding A in fp16 on the device (as a WebUI holds it), the first merge and a
  repeated one (alpha changes) against the copy bound (every patched parameter restored once from RAM);
- methods: each method against the plain merge of its group (bench/methods.py GROUPS);
- LoRA extract: A − B at --rank (randomized SVD) against reading every weight it reads from both files.
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))
os.environ.setdefault("ALLOY_HOME", tempfile.mkdtemp(prefix="alloy-bench-home-"))  # hash cache of this run

import torch  # noqa: E402
from contenders import io_baseline  # noqa: E402
from live_host import StubHost, load_live_module  # noqa: E402
from methods import GROUPS, recipe_text  # noqa: E402

from lib_merge.app.workbench import MergeRequest, Workbench  # noqa: E402
from lib_merge.engine.options import EngineOptions  # noqa: E402
from lib_merge.engine.to_file import SaveOptions, merge_to_file  # noqa: E402
from lib_merge.errors import ParameterError  # noqa: E402
from lib_merge.io.hashing import file_sha256  # noqa: E402
from lib_merge.io.source import SourceModel  # noqa: E402
from lib_merge.lora.extract import ExtractSettings, extract_lora  # noqa: E402
from lib_merge.lora.factor import RankRule  # noqa: E402
from lib_merge.lora.names import module_targets  # noqa: E402
from lib_merge.recipe import parse_recipe  # noqa: E402
from lib_merge.recipe.form import MergeSettings  # noqa: E402


def sync() -> None:
    """Wait for the GPU's queued work, so a time covers it (nothing to wait for on the CPU)."""
    if torch.cuda.is_initialized():
        torch.cuda.synchronize()


def timed(run: Callable[[], object]) -> float:
    start = time.perf_counter()
    run()
    sync()
    return time.perf_counter() - start


def best(repeat: int, run: Callable[[], object]) -> float:
    return min(timed(run) for _ in range(repeat))


def table(title: str, command: str, rows: list[tuple[str, float]], notes: dict[int, str] | None = None) -> None:
    """Rows of (what, seconds); the first row is the baseline."""
    print(f"\n{title}: `{command}`\n\n| row | s | × baseline |\n|---|---|---|")
    for n, (what, seconds) in enumerate(rows):
        note = f" ({notes[n]})" if notes and n in notes else ""
        print(f"| {what}{note} | {seconds:.2f} | {seconds / rows[0][1]:.2f}× |")


def merge_file(text: str, out: Path, device: str) -> None:
    save = SaveOptions(str(out), dtype=torch.float16, overwrite=True)
    merge_to_file(parse_recipe(text), save, EngineOptions(device=device))


def same_bytes(one: Path, other: Path) -> str:
    """Whether two merged files hold equal tensors (the device's result against the CPU's)."""
    a, b = SourceModel(str(one)), SourceModel(str(other))
    try:
        differ = sum(not torch.equal(a.read(k), b.read(k)) for k in a.keys)
        total = len(a.keys)
    finally:
        a.close()
        b.close()
    return "the same bytes as the CPU's" if not differ else f"{differ} of {total} tensors differ from the CPU's"


def file_table(args, paths: dict[str, Path], out: Path) -> None:
    text = recipe_text("weighted_sum(A, B, alpha=0.3)", args.models, args.arch)
    merge_file(text, out, args.device)  # warm-up: pages read, CUDA started
    inputs = [str(paths["a"]), str(paths["b"])]
    rows = [("plain I/O of the same bytes: read A and B, write and fsync A's size",
             best(args.repeat, lambda: io_baseline(inputs, str(out))))]  # fmt: skip
    rows.append(
        (
            f"weighted sum into fp16, --device {args.device}",
            best(args.repeat, lambda: merge_file(text, out, args.device)),
        )
    )
    notes = {}
    if args.device != "cpu":
        on_cpu = out.with_name("gpu_bench_cpu.safetensors")
        rows.append(
            ("weighted sum into fp16, --device cpu", best(args.repeat, lambda: merge_file(text, on_cpu, "cpu")))
        )
        notes[1] = same_bytes(out, on_cpu)
        on_cpu.unlink()
    out.unlink(missing_ok=True)
    table("File merge", f"python -m lib_merge merge --a A --b B --alpha 0.3 --device {args.device} -o OUT", rows, notes)


class DeviceHost(StubHost):
    """bench/live_host.py's stand-in WebUI, with Alloy's device setting."""

    device = "cpu"

    def config(self):
        return dataclasses.replace(super().config(), device=self.device)


def live_table(args, paths: dict[str, Path], data: Path) -> None:
    module = load_live_module(paths["a"], torch.float16).to(args.device)
    host = DeviceHost(paths["a"].parent, module, paths["a"].name, data, "auto")
    host.device = args.device
    workbench = Workbench(host)
    runs = max(3, args.repeat)

    def merge(alpha: float) -> None:
        settings = MergeSettings(paths["a"].name, paths["b"].name, alpha=alpha)
        assert workbench.merge(MergeRequest(settings=settings)).merged

    first = timed(lambda: merge(0.3))
    repeated = statistics.median(timed(lambda i=i: merge(0.31 + i / 100)) for i in range(runs))
    copies = []
    for i in range(runs):
        merge(0.2 + i / 100)
        copies.append(timed(lambda: workbench.backup.restore(module)))
    rows = [(f"copy bound: every patched parameter restored from RAM, into parameters on {args.device} (median)",
             statistics.median(copies)),
            ("first live merge: backups taken, B read into the RAM cache", first),
            ("repeated live merge, alpha changes (median)", repeated)]  # fmt: skip
    table("Live merge into fp16 parameters", f"Settings → Alloy → Merge on this device: {args.device}", rows)


def methods_table(args, out: Path) -> None:
    for group, exprs in GROUPS.items():
        rows = []
        for expr in exprs:
            text = recipe_text(expr, args.models, args.arch)
            rows.append((expr, best(args.repeat, lambda text=text: merge_file(text, out, args.device))))
        out.unlink(missing_ok=True)
        table(f"Methods, {group}, fp16 out", f"python -m lib_merge merge RECIPE --device {args.device} -o OUT", rows)


def lora_table(args, paths: dict[str, Path]) -> None:
    a, b = SourceModel(str(paths["a"])), SourceModel(str(paths["b"]))
    keys = sorted({t.target.key for t in module_targets(a.shapes, a.arch.id)} & set(b.keys))

    def read_all() -> None:
        for key in keys:
            a.read(key)
            b.read(key)

    def extract(device: str) -> Callable[[], object]:
        settings = ExtractSettings(str(paths["a"]), str(paths["b"]), rule=RankRule(rank=args.rank), device=device)
        return lambda: extract_lora(settings)

    try:
        if args.device != "cpu":
            extract(args.device)()  # warm-up: the GPU's solver libraries load on first use
        rows = [
            (f"read every weight extraction reads, from both files ({len(keys)} keys)", best(args.repeat, read_all))
        ]
        what = f"extract rank {args.rank}, randomized SVD"
        rows.append((f"{what}, --device {args.device}", best(args.repeat, extract(args.device))))
        if args.device != "cpu":
            rows.append((f"{what}, --device cpu (one run)", timed(extract("cpu"))))
    finally:
        a.close()
        b.close()
    command = f"python -m lib_merge lora extract --a A --b B --rank {args.rank} --device {args.device} -o OUT"
    table("LoRA extract, A − B, every module (3×3 convolutions at the same rank)", command, rows)


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--device", default="cuda", help="cpu, cuda, cuda:N")
    ap.add_argument("--arch", default="sd1", choices=["sd1", "sdxl"])
    ap.add_argument("--models", type=Path, default=ROOT / "bench" / "models")
    ap.add_argument("--out-dir", type=Path, help="where outputs go (default: --models)")
    ap.add_argument("--repeat", type=int, default=2)
    ap.add_argument("--rank", type=int, default=32)
    args = ap.parse_args(argv)
    try:
        EngineOptions(device=args.device)  # a device this machine lacks: one line, before anything runs
    except ParameterError as e:
        sys.exit(f"error: {e}")
    args.models = args.models.resolve()
    paths = {r: args.models / f"{args.arch}_{r}.safetensors" for r in "abc"}
    missing = [str(p) for p in paths.values() if not p.exists()]
    if missing:
        sys.exit(f"missing {', '.join(missing)}: run python bench/make_models.py --arch {args.arch} --roles a b c")
    for path in paths.values():
        file_sha256(str(path))  # hashed once, as before any merge after a model's first
    out = (args.out_dir or args.models) / "gpu_bench_out.safetensors"
    where = torch.cuda.get_device_name(args.device) if args.device.startswith("cuda") else f"{os.cpu_count()} cores"
    print(f"{args.arch}, {paths['a'].stat().st_size / 1e9:.2f} GB per model; --device {args.device} ({where}); "
          f"torch {torch.__version__}; best of {args.repeat}")  # fmt: skip
    file_table(args, paths, out)
    with tempfile.TemporaryDirectory() as data:
        live_table(args, paths, Path(data))
    methods_table(args, out)
    lora_table(args, paths)


if __name__ == "__main__":
    main()
