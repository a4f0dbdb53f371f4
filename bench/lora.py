"""LoRA extraction (randomized against full SVD) and baking a LoRA into a file (against a plain copy).

    python bench/lora.py [--rank 32] [--out-dir bench/models]

Needs bench/models/sd1_a.safetensors (python bench/make_models.py --arch sd1). Writes once
bench/models/sd1_tuned.safetensors: A plus, on every module a LoRA targets, a change with a decaying
spectrum (singular values 2 / i for i = 1…96, plus noise of std 1e-4), as fine-tunes have; the change is
far above the fp16 rounding of the file, so the extraction, not the rounding, sets the error.
Then, each as its own CLI process:
- `lora extract --a tuned --b A` with the randomized SVD and with --full-svd (same ranks): time, and the
  relative Frobenius error ‖ΔW − up·down‖ / ‖ΔW‖ over all modules and the worst per-module ratio of
  the randomized error to the full SVD's (the optimum at that rank);
- `lora bake --model A --lora extracted -o OUT` against copying A (read, write, fsync), with a plain
  two-model merge (weighted_sum of A and the tuned model) beside it for scale.
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
MODELS = ROOT / "bench" / "models"


def make_tuned(base: Path, out: Path) -> None:
    import torch
    from safetensors.torch import load_file, save_file

    from lib_merge.lora.names import module_targets

    tensors = load_file(str(base))
    shapes = {k: tuple(v.shape) for k, v in tensors.items()}
    g = torch.Generator().manual_seed(5)
    for key in sorted({t.target.key for t in module_targets(shapes, "sd1")}):
        w = tensors[key].float()
        flat = w.reshape(w.shape[0], -1)
        k = min(96, *flat.shape)
        u = torch.linalg.qr(torch.randn(flat.shape[0], k, generator=g))[0]
        v = torch.linalg.qr(torch.randn(flat.shape[1], k, generator=g))[0]
        s = 2.0 / torch.arange(1, k + 1, dtype=torch.float32)
        change = (u * s) @ v.T + 1e-4 * torch.randn(flat.shape, generator=g)
        tensors[key] = (flat + change).reshape(w.shape).to(tensors[key].dtype)
    save_file(tensors, str(out))


def timed(args: list[str]) -> float:
    subprocess.run(["sync"], check=True)
    start = time.perf_counter()
    subprocess.run([sys.executable, "-m", "lib_merge", "--no-progress", "--quiet", *args], cwd=ROOT, check=True,
                   stdout=subprocess.DEVNULL)  # fmt: skip
    return time.perf_counter() - start


def copy_file(src: Path, dst: Path) -> float:
    subprocess.run(["sync"], check=True)
    start = time.perf_counter()
    with open(src, "rb") as fi, open(dst, "wb") as fo:
        shutil.copyfileobj(fi, fo, 16 * 2**20)
        fo.flush()
        os.fsync(fo.fileno())
    return time.perf_counter() - start


def errors(tuned: Path, base: Path, lora: Path) -> dict[str, float]:
    """Per module: ‖ΔW − scale·up·down‖ / ‖ΔW‖, with ΔW read from the two checkpoints."""
    from safetensors import safe_open

    from lib_merge.lora.names import module_targets

    out = {}
    with safe_open(str(tuned), "pt") as ft, safe_open(str(base), "pt") as fb, safe_open(str(lora), "pt") as fl:
        shapes = {k: tuple(fb.get_slice(k).get_shape()) for k in fb.keys()}
        names = {n.rsplit(".", 2)[0] for n in fl.keys() if n.endswith("lora_down.weight")}
        for target in module_targets(shapes, "sd1"):
            if target.name not in names:
                continue
            delta = ft.get_tensor(target.target.key).float() - fb.get_tensor(target.target.key).float()
            flat = delta.reshape(delta.shape[0], -1)
            up = fl.get_tensor(f"{target.name}.lora_up.weight").float()
            down = fl.get_tensor(f"{target.name}.lora_down.weight").float()
            scale = float(fl.get_tensor(f"{target.name}.alpha")) / down.shape[0]
            approx = scale * up.reshape(up.shape[0], -1) @ down.reshape(down.shape[0], -1)
            out[target.name] = (float((flat - approx).norm()), float(flat.norm()))
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--rank", type=int, default=32)
    ap.add_argument("--out-dir", type=Path, default=MODELS)
    args = ap.parse_args()
    base, tuned = MODELS / "sd1_a.safetensors", MODELS / "sd1_tuned.safetensors"
    if not base.exists():
        sys.exit(f"missing {base}: run python bench/make_models.py --arch sd1")
    if not tuned.exists():
        print(f"writing {tuned} …", flush=True)
        make_tuned(base, tuned)
    out = args.out_dir
    rank = ["--rank", str(args.rank), "--conv-rank", str(args.rank), "--dtype", "fp32", "--overwrite"]
    extract = ["lora", "extract", "--a", str(tuned), "--b", str(base), *rank]
    timed([*extract, "-o", str(out / "bench_lora_rand.safetensors")])  # warm-up: hashes cached, pages read
    t_rand = timed([*extract, "-o", str(out / "bench_lora_rand.safetensors")])
    t_full = timed([*extract, "--full-svd", "-o", str(out / "bench_lora_full.safetensors")])
    e_rand = errors(tuned, base, out / "bench_lora_rand.safetensors")
    e_full = errors(tuned, base, out / "bench_lora_full.safetensors")

    def total(e: dict) -> float:
        return (sum(v[0] ** 2 for v in e.values()) / sum(v[1] ** 2 for v in e.values())) ** 0.5

    worst = max(e_rand[n][0] / e_full[n][0] for n in e_full if e_full[n][0] > 0)
    cores = os.cpu_count()
    print(f"extraction, SD1.5 size, rank {args.rank} (linear and 3×3 conv), {len(e_full)} modules, {cores} cores:")
    print(f"  randomized SVD {t_rand:8.1f} s   error {total(e_rand):.4f}")
    print(f"  full SVD       {t_full:8.1f} s   error {total(e_full):.4f}")
    print(f"  full / randomized time {t_full / t_rand:.1f}x; error ratio overall {total(e_rand) / total(e_full):.4f}, "
          f"worst module {worst:.4f}")  # fmt: skip

    lora = out / "bench_lora_rand.safetensors"
    bake = ["lora", "bake", "--model", str(base), "--lora", str(lora), "--no-history", "--overwrite"]
    timed([*bake, "-o", str(out / "bench_baked.safetensors")])
    t_bake = min(timed([*bake, "-o", str(out / "bench_baked.safetensors")]) for _ in range(2))
    t_copy = min(copy_file(base, out / "bench_copy.safetensors") for _ in range(2))
    merge = ["merge", "--a", str(base), "--b", str(tuned), "--mode", "weighted_sum", "--alpha", "0.5", "--no-history",
             "--overwrite", "-o", str(out / "bench_baked.safetensors")]  # fmt: skip
    t_merge = min(timed(merge) for _ in range(2))
    print(f"bake one LoRA ({lora.stat().st_size / 2**20:.0f} MB) into SD1.5 (fp16 out), best of 2:")
    print(f"  plain copy {t_copy:6.2f} s   1.00x")
    print(f"  lora bake  {t_bake:6.2f} s   {t_bake / t_copy:5.2f}x")
    print(f"  merge A, B {t_merge:6.2f} s   {t_merge / t_copy:5.2f}x  (weighted_sum, for scale)")
    for name in ("bench_baked", "bench_copy", "bench_lora_full"):
        (out / f"{name}.safetensors").unlink(missing_ok=True)


if __name__ == "__main__":
    main()
