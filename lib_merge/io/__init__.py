"""Opening checkpoints lazily and writing them safely."""

from __future__ import annotations

import os

from lib_merge.errors import CorruptModelError, ModelNotFoundError
from lib_merge.io.ckpt_reader import CkptFile
from lib_merge.io.quantized import refuse_bitsandbytes, refuse_gguf
from lib_merge.io.safetensors_reader import SafetensorsFile, TensorInfo
from lib_merge.io.scaled_fp8 import ScaledFp8File, is_scaled_fp8
from lib_merge.io.writer import PlannedTensor, SafetensorsWriter, save_state_dict

PICKLE_SUFFIXES = (".ckpt", ".pt", ".pth", ".bin")

ModelFile = SafetensorsFile | CkptFile | ScaledFp8File


def open_model(path: str) -> ModelFile:
    """Open a checkpoint by its file type; only headers are read for safetensors.

    Quantized formats Alloy does not read (GGUF, bitsandbytes NF4/FP4) are refused here by name; a
    scaled fp8 file is opened through ScaledFp8File, so every reader above sees the real values."""
    if not os.path.isfile(path):
        raise ModelNotFoundError(f"model file not found: {path}")
    refuse_gguf(path)
    if path.lower().endswith(PICKLE_SUFFIXES):
        opened: SafetensorsFile | CkptFile = CkptFile(path)
    else:
        try:
            opened = SafetensorsFile(path)
        except PermissionError as e:
            raise CorruptModelError(f"cannot read {path}: {e.strerror}") from None
    try:
        refuse_bitsandbytes(path, opened.keys())
        return ScaledFp8File(opened) if is_scaled_fp8(opened.tensors) else opened
    except BaseException:
        opened.close()
        raise


__all__ = [
    "CkptFile",
    "ModelFile",
    "PlannedTensor",
    "SafetensorsFile",
    "SafetensorsWriter",
    "ScaledFp8File",
    "TensorInfo",
    "open_model",
    "save_state_dict",
]
