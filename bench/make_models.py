"""Write full-size synthetic checkpoints (real keys and shapes) for benchmarks.

    python bench/make_models.py [--arch sd1 sdxl flux sd35_large] [--dir bench/models]

Files: <dir>/<arch>_a.safetensors, <arch>_b.safetensors (and _c with --roles a b c); in fp16, 2.1 GB
each for SD1, 6.9 GB for SDXL; Flux dev as the fp8 (e4m3fn) transformer alone, 11.9 GB, as most Flux
merges are shared; SD3.5 large as its release file (transformer and VAE, fp16), 16.3 GB.
Existing files are kept. The folder is ignored by git.
"""

from __future__ import annotations

import argparse
import os
import signal
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import torch  # noqa: E402

from lib_merge.io.synth import SynthSpec, write_synthetic  # noqa: E402

DEFAULT_DIR = Path(__file__).resolve().parent / "models"
SPECS = {
    "sd1": {},
    "sdxl": {},
    "flux": {"components": ("diffuser",), "dtype": torch.float8_e4m3fn},
    "sd35_large": {"components": ("diffuser", "vae")},
}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--arch", nargs="+", default=["sd1", "sdxl"], choices=list(SPECS))
    ap.add_argument("--dir", type=Path, default=DEFAULT_DIR)
    ap.add_argument("--roles", nargs="+", default=["a", "b"], choices=["a", "b", "c"], help="c: a third model")
    args = ap.parse_args()
    # SIGTERM (kill, pkill) unwinds like Ctrl+C: the writer removes its multi-GB temporary file.
    signal.signal(signal.SIGTERM, lambda signum, frame: sys.exit(128 + signum))
    args.dir.mkdir(parents=True, exist_ok=True)
    for arch in args.arch:
        for role, seed in (("a", 1), ("b", 2), ("c", 3)):
            if role not in args.roles:
                continue
            path = args.dir / f"{arch}_{role}.safetensors"
            if path.exists():
                print(f"keep {path}")
                continue
            t = time.perf_counter()
            write_synthetic(str(path), SynthSpec(arch=arch, scale=1, seed=seed, std=0.02, **SPECS[arch]))
            print(f"wrote {path} ({os.path.getsize(path) / 1e9:.2f} GB, {time.perf_counter() - t:.0f} s)")


if __name__ == "__main__":
    main()
