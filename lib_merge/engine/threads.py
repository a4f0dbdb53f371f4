"""The engine's worker pools: each worker runs torch single-threaded.

The workers already fill the cores; torch's own intra-op pool on top of each would put two threads on
every core. Setting one worker's count also changes torch's default for threads made later, so the
caller's count is put back when the pool closes (the host's generation runs with it).
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor

import torch


@contextlib.contextmanager
def worker_pool(workers: int, name: str) -> Iterator[ThreadPoolExecutor]:
    workers = max(1, workers)
    intra_op = torch.get_num_threads()
    one_each = dict(initializer=torch.set_num_threads, initargs=(1,)) if workers > 1 else {}
    try:
        with ThreadPoolExecutor(workers, thread_name_prefix=name, **one_each) as pool:
            yield pool
    finally:
        torch.set_num_threads(intra_op)
