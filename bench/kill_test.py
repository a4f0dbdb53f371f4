"""The kill test: kill -9 a full-size SD1 merge that is saving onto an existing merge, again and again.

    python bench/kill_test.py [--runs 10] [--seed 1] [--dir bench/models] [--out bench/results/kill]

A first merge (alpha 0.3) is the existing file; each run starts the same merge with alpha 0.7 and
--overwrite, and kills it with SIGKILL at a random moment of the time a whole merge takes. After
every kill the target must be a complete file, either the old merge or the new one: its header
parses, its data hashes to the sha256 its metadata records, and its recipe hash is one of the two.
At the end `python -m lib_merge clean` must leave no temporary file. Exit status 0 when all held.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import random
import signal
import struct
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from lib_merge.io.synth import SynthSpec, write_synthetic  # noqa: E402
from lib_merge.io.tempfiles import TEMP_MARK  # noqa: E402


def merge_command(a: Path, b: Path, alpha: float, out: Path) -> list[str]:
    return [sys.executable, "-m", "lib_merge", "--no-progress", "merge", "--a", str(a), "--b", str(b),
            "--mode", "ws", "--alpha", str(alpha), "--overwrite", "--no-history", "-o", str(out)]  # fmt: skip


def check_complete(path: Path) -> str:
    """The file's recipe hash when it is a whole safetensors file whose data matches its recorded hash."""
    with open(path, "rb") as f:
        size = struct.unpack("<Q", f.read(8))[0]
        header = json.loads(f.read(size))
        meta = header.pop("__metadata__")
        end = max(entry["data_offsets"][1] for entry in header.values())
        digest = hashlib.sha256()
        left = end
        while left:
            chunk = f.read(min(left, 1 << 24))
            if not chunk:
                raise ValueError(f"{path} ends {left} bytes early")
            digest.update(chunk)
            left -= len(chunk)
        if f.read(1):
            raise ValueError(f"{path} has bytes after its data")
    if "0x" + digest.hexdigest() != meta["modelspec.hash_sha256"]:
        raise ValueError(f"{path}: data does not match its recorded sha256")
    return meta["alloy_recipe_hash"]


def temp_files(folder: Path) -> list[Path]:
    return [p for p in folder.iterdir() if TEMP_MARK in p.name]


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--runs", type=int, default=10)
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--dir", type=Path, default=ROOT / "bench" / "models")
    ap.add_argument("--out", type=Path, default=ROOT / "bench" / "results" / "kill")
    args = ap.parse_args()
    args.dir.mkdir(parents=True, exist_ok=True)
    args.out.mkdir(parents=True, exist_ok=True)
    a, b = args.dir / "sd1_a.safetensors", args.dir / "sd1_b.safetensors"
    for path, seed in ((a, 1), (b, 2)):
        if not path.exists():
            write_synthetic(str(path), SynthSpec(arch="sd1", scale=1, seed=seed, std=0.02))
    target = args.out / "merged.safetensors"
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    subprocess.run(merge_command(a, b, 0.3, target), check=True, env=env, capture_output=True)
    old = check_complete(target)
    started = time.perf_counter()
    subprocess.run(merge_command(a, b, 0.7, args.out / "reference.safetensors"), check=True, env=env,
                   capture_output=True)  # fmt: skip
    whole = time.perf_counter() - started
    new = check_complete(args.out / "reference.safetensors")
    os.unlink(args.out / "reference.safetensors")
    print(f"a whole merge takes {whole:.1f} s; old recipe {old[:10]}, new recipe {new[:10]}")
    rng = random.Random(args.seed)
    seen = {"old": 0, "new": 0}
    failures = 0
    for run in range(1, args.runs + 1):
        subprocess.run(merge_command(a, b, 0.3, target), check=True, env=env, capture_output=True)  # old again
        delay = rng.uniform(0.02, 1.1) * whole  # up to past the moment the file takes its name
        proc = subprocess.Popen(merge_command(a, b, 0.7, target), env=env, stdout=subprocess.DEVNULL,
                                stderr=subprocess.DEVNULL)  # fmt: skip
        time.sleep(delay)
        finished = proc.poll() is not None
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        try:
            which = {old: "old", new: "new"}[check_complete(target)]
        except (ValueError, KeyError, OSError) as e:
            print(f"run {run}: FAILED: the target is damaged ({e})")
            failures += 1
            continue
        seen[which] += 1
        left = temp_files(args.out)
        state = "had already finished" if finished else f"killed at {delay:.2f} s"
        print(f"run {run}: {state}; target complete ({which}); temporary files now: {len(left)}")
    cleaned = subprocess.run([sys.executable, "-m", "lib_merge", "clean", str(args.out)], env=env,
                             capture_output=True, text=True)  # fmt: skip
    print(cleaned.stdout.strip() or cleaned.stderr.strip())
    left = temp_files(args.out)
    print(f"{args.runs} kills: target complete every time: {failures == 0} (old {seen['old']}, new {seen['new']}); "
          f"temporary files after clean: {len(left)}")  # fmt: skip
    return 0 if failures == 0 and not left and cleaned.returncode == 0 else 1


if __name__ == "__main__":
    sys.exit(main())
