"""Weighted sum of fp16/bf16 inputs into an fp32 output, in one call per tensor.

A live merge into fp32 parameters (the WebUI on a CPU) reads fp16 inputs: each chunk needs A
widened into the output, B widened into a buffer and the lerp, three kernels. Called from Python
that is some ten thousand chunks for SD1.5, and every torch call lets the other merge worker take
the GIL (and torch 2.13 takes it again inside, for its arguments' reference counts), so the
workers spend their time waiting on each other (docs/PERFORMANCE.md). TorchScript runs the same
loop, the same kernels, without Python between them. torch 2.13 marks TorchScript deprecated:
where it is gone or cannot compile the loop, the same loop runs in Python, with the same results.
"""

from __future__ import annotations

import functools
import threading
import warnings
from collections.abc import Callable

import torch

WIDENING_CHUNK = 1 << 16  # elements: 256 KiB of fp32 output and the same of buffer, held in L2


def lerp_widening(a: torch.Tensor, b: torch.Tensor, out: torch.Tensor, weight: float, chunk: int) -> None:
    """out = lerp(a, b, weight), computed in out's dtype a chunk at a time (inputs of out's size,
    any shape). The weight goes in as a 0-dim tensor: torch's kernel for that gives the same bits
    as for a number, in less time."""
    flat_a, flat_b, flat_out = a.reshape(-1), b.reshape(-1), out.view(-1)
    n = flat_out.numel()
    buffer = torch.empty([min(chunk, n)], dtype=out.dtype, device=out.device)
    w = torch.full([], weight, dtype=out.dtype, device=out.device)
    for start in range(0, n, chunk):
        end = min(n, start + chunk)
        target = flat_out[start:end]
        target.copy_(flat_a[start:end])
        other = buffer[: end - start]
        other.copy_(flat_b[start:end])
        target.lerp_(other, w)


_COMPILING = threading.Lock()  # the merge workers' first calls come together: one compiles


def compiled(fn: Callable) -> Callable:
    """`fn` compiled by TorchScript, or `fn` itself where that is not possible; compiled on first use
    (0.1 s), not when a command that never widens starts."""
    with _COMPILING:
        return _compile(fn)


@functools.cache
def _compile(fn: Callable) -> Callable:
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # the deprecation notice of torch ≥ 2.13
            return torch.jit.script(fn)
    except Exception:  # no TorchScript, no source to compile (frozen installs): the plain loop
        return fn


def weighted_sum_widening(a: torch.Tensor, b: torch.Tensor, alpha: float, out: torch.Tensor) -> torch.Tensor:
    """(1 − α)·A + α·B of narrower inputs, computed in out's dtype (fp32) straight into `out`."""
    compiled(lerp_widening)(a, b, out, float(alpha), WIDENING_CHUNK)
    return out
