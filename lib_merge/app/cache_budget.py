"""How much RAM the source cache may take: the setting's text ("auto", GiB, 0) as bytes."""

from __future__ import annotations

import os

from lib_merge.errors import ParameterError

AUTO_CACHE_CAP = 16 * 2**30


def available_memory() -> int:
    """RAM that can be had without swapping: free pages plus the page cache the kernel can drop.

    The free pages alone undercount: after reading a few checkpoints most RAM is page cache.
    """
    try:
        with open("/proc/meminfo", encoding="ascii") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    try:
        return os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    except (ValueError, OSError, AttributeError):
        return 8 * 2**30


def parse_cache_budget(text: str) -> int:
    """ "auto" = 25% of the available RAM (page cache counted) up to 16 GiB; else GiB as a number (0 = off)."""
    value = str(text).strip().lower()
    if value in ("", "0", "off"):
        return 0
    if value == "auto":
        return min(available_memory() // 4, AUTO_CACHE_CAP)
    try:
        gib = float(value)
    except ValueError:
        raise ParameterError(f"cache budget must be 'auto' or a number of GiB, not {text!r}") from None
    if gib < 0:
        raise ParameterError(f"cache budget must not be negative: {text!r}")
    return int(gib * 2**30)
