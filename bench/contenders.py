"""One benchmark contender per process, so each gets its own wall time and peak RSS.

python bench/contenders.py io|naive|alloy|mecha A B OUT ALPHA [THREADS]
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


def io_baseline(a: str, b: str, out: str) -> None:
    """Read both inputs fully and write one file of the output's size (A's bytes), then fsync."""
    buf = bytearray(CHUNK)
    with open(a, "rb", buffering=0) as fa, open(out, "wb", buffering=0) as fo:
        while n := fa.readinto(buf):
            fo.write(memoryview(buf)[:n])
        os.fsync(fo.fileno())
    with open(b, "rb", buffering=0) as fb:
        while fb.readinto(buf):
            pass


def naive(a: str, b: str, out: str, alpha: float) -> None:
    """What simple merge scripts do: load both models whole, merge, save."""
    import torch
    from safetensors.torch import load_file, save_file

    sa, sb = load_file(a), load_file(b)
    merged = {}
    for k in list(sa):
        t = sa.pop(k)  # freeing inputs as it goes keeps an SDXL run within this machine's RAM
        other = sb.pop(k, None)
        if t.is_floating_point() and other is not None:
            merged[k] = ((1 - alpha) * t.float() + alpha * other.float()).to(torch.float16)
        else:
            merged[k] = t
    save_file(merged, out)
    _fsync(out)


def alloy(a: str, b: str, out: str, alpha: float, threads: str | None) -> None:
    cmd = [
        sys.executable,
        "-m",
        "lib_merge",
        "--no-progress",
        "--quiet",
        "merge",
        "--a",
        a,
        "--b",
        b,
        "--mode",
        "weighted_sum",
        "--alpha",
        str(alpha),
        "-o",
        out,
    ]
    if threads:
        cmd += ["--threads", threads]
    # exec, so this process's peak RSS is Alloy's own.
    os.execve(sys.executable, cmd, dict(os.environ, PYTHONPATH=str(ROOT)))


def mecha(a: str, b: str, out: str, alpha: float, threads: str | None) -> None:
    import sd_mecha

    recipe = sd_mecha.weighted_sum(sd_mecha.model(a), sd_mecha.model(b), alpha=alpha)
    kwargs = {"threads": int(threads)} if threads else {}
    sd_mecha.merge(recipe, output=out, output_dtype=__import__("torch").float16, **kwargs)


def main() -> None:
    name, a, b, out, alpha = sys.argv[1:6]
    threads = sys.argv[6] if len(sys.argv) > 6 else None
    if name == "import":  # what every Alloy process pays before its first key: python + torch + lib_merge
        os.execve(
            sys.executable,
            [sys.executable, "-c", "import lib_merge.engine.to_file"],
            dict(os.environ, PYTHONPATH=str(ROOT)),
        )
    elif name == "io":
        io_baseline(a, b, out)
    elif name == "naive":
        naive(a, b, out, float(alpha))
    elif name == "alloy":
        alloy(a, b, out, float(alpha), threads)
    elif name == "mecha":
        mecha(a, b, out, float(alpha), threads)
    else:
        raise SystemExit(f"unknown contender {name}")


if __name__ == "__main__":
    main()
