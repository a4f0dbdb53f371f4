"""Write full-size synthetic checkpoints (real keys and shapes) for benchmarks.

    python bench/make_models.py [--arch sd1 sdxl flux sd35_large] [--dir bench/models]

Files: <dir>/<arch>_a.safetensors, <arch>_b.safetensors (and _c … _p with --roles, or the first N with
--count N: sixteen SD1.5 files for bench/many.py); in fp16, 2.1 GB
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
ROLES = "abcdefghijklmnop"  # role r is written with seed ROLES.index(r) + 1: a, b and c as before


def model_path(folder: Path, arch: str, role: str) -> Path:
    return folder / f"{arch}_{role}.safetensors"


def make(arch: str, roles: list[str], folder: Path = DEFAULT_DIR) -> list[Path]:
    """The files of these roles, written where missing (existing files are kept)."""
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for role in roles:
        path = model_path(folder, arch, role)
        paths.append(path)
        if path.exists():
            print(f"keep {path}")
            continue
        t = time.perf_counter()
        spec = SynthSpec(arch=arch, scale=1, seed=ROLES.index(role) + 1, std=0.02, **SPECS[arch])
        write_synthetic(str(path), spec)
        print(f"wrote {path} ({os.path.getsize(path) / 1e9:.2f} GB, {time.perf_counter() - t:.0f} s)", flush=True)
    return paths


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--arch", nargs="+", default=["sd1", "sdxl"], choices=list(SPECS))
    ap.add_argument("--dir", type=Path, default=DEFAULT_DIR)
    ap.add_argument("--roles", nargs="+", default=["a", "b"], choices=list(ROLES), help="c: a third model")
    ap.add_argument("--count", type=int, choices=range(1, len(ROLES) + 1), metavar="N", help="roles a, b, … up to N")
    args = ap.parse_args()
    # SIGTERM (kill, pkill) unwinds like Ctrl+C: the writer removes its multi-GB temporary file.
    signal.signal(signal.SIGTERM, lambda signum, frame: sys.exit(128 + signum))
    roles = list(ROLES[: args.count]) if args.count else args.roles
    for arch in args.arch:
        make(arch, roles, args.dir)


if __name__ == "__main__":
    main()
