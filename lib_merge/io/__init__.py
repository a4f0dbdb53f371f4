"""Opening checkpoints lazily and writing them safely."""

from __future__ import annotations

import os

from lib_merge.errors import CorruptModelError, ModelNotFoundError
from lib_merge.io.ckpt_reader import CkptFile
from lib_merge.io.safetensors_reader import SafetensorsFile, TensorInfo
from lib_merge.io.writer import PlannedTensor, SafetensorsWriter, save_state_dict

PICKLE_SUFFIXES = (".ckpt", ".pt", ".pth", ".bin")

ModelFile = SafetensorsFile | CkptFile


def open_model(path: str) -> ModelFile:
    """Open a checkpoint by its file type; only headers are read for safetensors."""
    if not os.path.isfile(path):
        raise ModelNotFoundError(f"model file not found: {path}")
    if path.lower().endswith(PICKLE_SUFFIXES):
        return CkptFile(path)
    try:
        return SafetensorsFile(path)
    except PermissionError as e:
        raise CorruptModelError(f"cannot read {path}: {e.strerror}") from None


__all__ = [
    "CkptFile",
    "ModelFile",
    "PlannedTensor",
    "SafetensorsFile",
    "SafetensorsWriter",
    "TensorInfo",
    "open_model",
    "save_state_dict",
]
