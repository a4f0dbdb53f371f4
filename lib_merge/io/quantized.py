"""Quantized formats Alloy does not read (GGUF, bitsandbytes NF4/FP4), refused at open by name.

Their tensors are packed blocks with per-block scales: merged as if they were weights they would
give garbage, and GGUF is no safetensors file at all (its header would read as a corrupt one). So the
file is refused with one line naming the format and the file, before any tensor is read.
"""

from __future__ import annotations

import os

from lib_merge.errors import UnsupportedFormatError

GGUF_MAGIC = b"GGUF"
READS = "Alloy reads safetensors and .ckpt in fp32/fp16/bf16/fp8 only"
_BNB_SUFFIXES = (".absmax", ".quant_map", ".nested_absmax", ".nested_quant_map")
_BNB_STATE = ".quant_state.bitsandbytes__"


def refuse_gguf(path: str) -> None:
    """A GGUF file (its magic bytes at offset 0, whatever its ending) is refused naming the file."""
    try:
        with open(path, "rb") as f:
            head = f.read(4)
    except OSError:
        return  # the reader reports it in its own words
    if head == GGUF_MAGIC:
        raise UnsupportedFormatError(f"{os.path.basename(path)} is a GGUF file (quantized); {READS}")


def refuse_bitsandbytes(path: str, keys: list[str]) -> None:
    """A bitsandbytes 4-bit file (NF4 or FP4: quant_state, absmax and quant_map keys), from its key names."""
    kind = None
    for key in keys:
        if _BNB_STATE in key:
            kind = key.rsplit(_BNB_STATE, 1)[1].upper()
            break
        if kind is None and key.endswith(_BNB_SUFFIXES):
            kind = "4-bit"
    if kind is not None:
        if kind not in ("NF4", "FP4"):
            kind = "4-bit"
        raise UnsupportedFormatError(f"{os.path.basename(path)} is a bitsandbytes {kind} file (quantized); {READS}")
