"""argparse types of the command line: numbers refused with one clear line before anything is read."""

from __future__ import annotations

import argparse
import math


def finite_float(text: str) -> float:
    """argparse type: a finite number (inf and nan are refused before anything is read)."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number") from None
    if not math.isfinite(value):
        raise argparse.ArgumentTypeError(f"{text!r} is not a finite number")
    return value


def whole_number(text: str) -> int:
    try:
        return int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a whole number") from None
