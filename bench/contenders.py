"""One benchmark contender per process, so each gets its own wall time and peak RSS.

python bench/contenders.py io|io-paced|naive|alloy|mecha OUT ALPHA THREADS A B [C]

With C: add difference A + alpha (B - C); without: weighted sum. THREADS 0 = the contender's default.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
CHUNK = 16 * 1024 * 1024


def _fsync(path: str) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def io_baseline(inputs: list[str], out: str) -> None:
    """Read every input fully and write one file of the output's size (A's bytes), then fsync."""
    buf = bytearray(CHUNK)
    with open(inputs[0], "rb", buffering=0) as fa, open(out, "wb", buffering=0) as fo:
        while n := fa.readinto(buf):
            fo.write(memoryview(buf)[:n])
        os.fsync(fo.fileno())
    for path in inputs[1:]:
        with open(path, "rb", buffering=0) as f:
            while f.readinto(buf):
                pass


def io_paced(inputs: list[str], out: str) -> None:
    """The I/O baseline writing with early writeback, as Alloy's writer does (lib_merge/io/writeback.py)."""
    sys.path.insert(0, str(ROOT))
    from lib_merge.io.writeback import Writeback

    buf = bytearray(CHUNK)
    with open(inputs[0], "rb", buffering=0) as fa, open(out, "wb", buffering=0) as fo:
        pacing = Writeback(fo.fileno())
        while n := fa.readinto(buf):
            fo.write(memoryview(buf)[:n])
            pacing.wrote(n)
        pacing.close()
        os.fsync(fo.fileno())
    for path in inputs[1:]:
        with open(path, "rb", buffering=0) as f:
            while f.readinto(buf):
                pass


def naive(inputs: list[str], out: str, alpha: float) -> None:
    """What simple merge scripts do: load the models whole, merge, save."""
    import torch
    from safetensors.torch import load_file, save_file

    sa, sb = load_file(inputs[0]), load_file(inputs[1])
    sc = load_file(inputs[2]) if len(inputs) > 2 else None
    merged = {}
    for k in list(sa):
        t = sa.pop(k)  # freeing inputs as it goes keeps an SDXL run within this machine's RAM
        other = sb.pop(k, None)
        third = sc.pop(k, None) if sc is not None else None
        if not t.is_floating_point() or other is None:
            merged[k] = t
        elif sc is None:
            merged[k] = ((1 - alpha) * t.float() + alpha * other.float()).to(torch.float16)
        elif third is not None:
            merged[k] = (t.float() + alpha * (other.float() - third.float())).to(torch.float16)
        else:
            merged[k] = t
    save_file(merged, out)
    _fsync(out)


def alloy(inputs: list[str], out: str, alpha: float, threads: str) -> None:
    cmd = [sys.executable, "-m", "lib_merge", "--no-progress", "--quiet", "merge", "--a", inputs[0], "--b", inputs[1]]
    if len(inputs) > 2:
        cmd += ["--c", inputs[2], "--mode", "add_difference"]
    else:
        cmd += ["--mode", "weighted_sum"]
    cmd += ["--alpha", str(alpha), "--dtype", os.environ.get("ALLOY_BENCH_DTYPE", "fp16"), "-o", out]
    if threads != "0":
        cmd += ["--threads", threads]
    # exec, so this process's peak RSS is Alloy's own.
    os.execve(sys.executable, cmd, dict(os.environ, PYTHONPATH=str(ROOT)))


def mecha(inputs: list[str], out: str, alpha: float, threads: str) -> None:
    import sd_mecha

    models = [sd_mecha.model(p) for p in inputs]
    if len(models) > 2:
        recipe = sd_mecha.add_difference(models[0], models[1], models[2], alpha=alpha)
    else:
        recipe = sd_mecha.weighted_sum(models[0], models[1], alpha=alpha)
    kwargs = {"threads": int(threads)} if threads != "0" else {}
    sd_mecha.merge(recipe, output=out, output_dtype=__import__("torch").float16, **kwargs)


def main() -> None:
    name, out, alpha, threads, *inputs = sys.argv[1:]
    if name == "import":  # what every Alloy process pays before its first key: python + torch + lib_merge
        os.execve(
            sys.executable,
            [sys.executable, "-c", "import lib_merge.engine.to_file"],
            dict(os.environ, PYTHONPATH=str(ROOT)),
        )
    elif name == "io":
        io_baseline(inputs, out)
    elif name == "io-paced":
        io_paced(inputs, out)
    elif name == "naive":
        naive(inputs, out, float(alpha))
    elif name == "alloy":
        alloy(inputs, out, float(alpha), threads)
    elif name == "mecha":
        mecha(inputs, out, float(alpha), threads)
    else:
        raise SystemExit(f"unknown contender {name}")


if __name__ == "__main__":
    main()
