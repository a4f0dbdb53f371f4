"""Toolkit prune against a plain read + write, and the analysis of two SDXL checkpoints (time, peak RSS).

    python bench/toolkit.py [--out-dir bench/models]

Needs bench/models/sd1_a.safetensors and sdxl_{a,b}.safetensors (python bench/make_models.py). Writes once
bench/models/sd1_fp32_ema.safetensors: sd1_a in fp32 with an EMA copy of its UNet (as training saves it).
Each run is its own CLI process; peak RSS is the child's maximum resident set size.
- prune: `prune sd1_fp32_ema -o OUT` (fp16, EMA dropped) against reading the whole input and writing a
  file of the output's size (fsynced), best of 2;
- analysis: `analyze sdxl_a sdxl_b --attention` (every key, every attention module), time and peak RSS.
"""

from __future__ import annotations

import argparse
import os
import resource
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
MODELS = ROOT / "bench" / "models"
CHUNK = 16 * 2**20


def make_fp32_ema(base: Path, out: Path) -> None:
    """Streamed: one tensor in memory at a time."""
    import torch

    from lib_merge.io.source import SourceModel
    from lib_merge.io.writer import PlannedTensor, SafetensorsWriter

    source = SourceModel(str(base))
    try:

        def wide(key: str) -> torch.dtype:
            return torch.float32 if source.info(key).dtype.is_floating_point else source.info(key).dtype

        entries = [(k, k) for k in source.keys]
        entries += [("model_ema." + k[len("model."):].replace(".", ""), k) for k in source.keys
                    if k.startswith("model.diffusion_model.")]  # fmt: skip
        plan = [PlannedTensor(name, wide(key), tuple(source.info(key).shape)) for name, key in entries]
        writer = SafetensorsWriter(str(out), plan, {}).open()
        for name, key in entries:
            writer.write(name, source.read(key).to(wide(key)))
        writer.finish({})
    finally:
        source.close()


def child(args: list[str]) -> tuple[float, float]:
    """(seconds, peak RSS in MB) of one CLI run."""
    subprocess.run(["sync"], check=True)
    start = time.perf_counter()
    proc = subprocess.run([sys.executable, "-c", _CHILD, *args], cwd=ROOT, check=True, capture_output=True, text=True)
    seconds = time.perf_counter() - start
    return seconds, float(proc.stdout.strip().splitlines()[-1])


_CHILD = """
import resource, sys
from lib_merge.surfaces.cli import main
import contextlib, io
with contextlib.redirect_stdout(io.StringIO()):
    code = main(["--no-progress", "--quiet", *sys.argv[1:]])
assert code == 0, code
print(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024)
"""


def read_write(src: Path, size: int, dst: Path) -> float:
    subprocess.run(["sync"], check=True)
    start = time.perf_counter()
    buf = bytearray(CHUNK)
    with open(src, "rb", buffering=0) as f:
        while f.readinto(buf):
            pass
    with open(dst, "wb", buffering=0) as f:
        left = size
        while left > 0:
            n = min(left, CHUNK)
            f.write(memoryview(buf)[:n])
            left -= n
        os.fsync(f.fileno())
    return time.perf_counter() - start


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out-dir", type=Path, default=MODELS)
    args = ap.parse_args()
    needed = [MODELS / n for n in ("sd1_a.safetensors", "sdxl_a.safetensors", "sdxl_b.safetensors")]
    missing = [str(p) for p in needed if not p.exists()]
    if missing:
        sys.exit(f"missing {', '.join(missing)}: run python bench/make_models.py")
    fat = MODELS / "sd1_fp32_ema.safetensors"
    if not fat.exists():
        print(f"writing {fat} …", flush=True)
        make_fp32_ema(MODELS / "sd1_a.safetensors", fat)
    out = args.out_dir / "bench_pruned.safetensors"
    prune = ["prune", str(fat), "-o", str(out), "--overwrite"]
    child(prune)  # warm-up
    t_prune, rss_prune = min(child(prune) for _ in range(2))
    size = out.stat().st_size
    t_io = min(read_write(fat, size, args.out_dir / "bench_io.bin") for _ in range(2))
    gb = 2**30
    print(f"prune fp32 SD1.5 with EMA ({fat.stat().st_size / gb:.2f} GB → {size / gb:.2f} GB fp16), best of 2:")
    print(f"  read input + write output size  {t_io:6.2f} s   1.00x")
    ratio = t_prune / t_io
    print(f"  prune                            {t_prune:6.2f} s   {ratio:5.2f}x   peak RSS {rss_prune:,.0f} MB")
    for name in ("bench_pruned.safetensors", "bench_io.bin"):
        (args.out_dir / name).unlink(missing_ok=True)
    analyze = ["analyze", str(MODELS / "sdxl_a.safetensors"), str(MODELS / "sdxl_b.safetensors"), "--attention"]
    t_an, rss_an = child(analyze)
    t_plain, rss_plain = child(analyze[:-1])
    print("analysis of two SDXL checkpoints (2 × 6.9 GB):")
    print(f"  keys only          {t_plain:6.1f} s   peak RSS {rss_plain:,.0f} MB")
    print(f"  keys + attention   {t_an:6.1f} s   peak RSS {rss_an:,.0f} MB")
    print(f"  (this process: {resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024:,.0f} MB)")


if __name__ == "__main__":
    main()
