"""Reading ``.ckpt``/``.pt`` checkpoints with torch's weights-only unpickler.

Pickle can run arbitrary code, so only the restricted loader is ever used; a file that
needs anything else is refused, never retried with the unsafe loader.
"""

from __future__ import annotations

import os
import pickle
import warnings

import torch

from lib_merge.errors import CorruptModelError, UnsafePickleError
from lib_merge.io.safetensors_reader import TensorInfo


class CkptFile:
    """A pickled checkpoint opened with ``torch.load(weights_only=True, mmap=True)``."""

    def __init__(self, path: str):
        self.path = path
        st = os.stat(path)
        self.size = st.st_size
        self.mtime_ns = st.st_mtime_ns
        self.metadata: dict[str, str] = {}
        self._state, self.dropped = _load_state_dict(path)
        self.tensors = {
            k: TensorInfo(k, t.dtype, tuple(t.shape), i, t.numel() * t.element_size())
            for i, (k, t) in enumerate(self._state.items())
        }

    def keys(self) -> list[str]:
        return list(self.tensors)

    def read(self, key: str) -> torch.Tensor:
        return self._state[key].clone()

    def view(self, key: str) -> torch.Tensor:
        return self._state[key]

    def release(self, key: str) -> None:
        pass

    def close(self) -> None:
        self._state = {}


def _load_state_dict(path: str) -> tuple[dict[str, torch.Tensor], list[str]]:
    """The tensors of the state dict, and the names of the entries around or beside them that are not
    (a trainer's "global_step", "optimizer_states", …)."""
    name = os.path.basename(path)
    try:
        with warnings.catch_warnings():  # torch's own warnings and advice are not for Alloy's users
            warnings.simplefilter("ignore")
            try:
                obj = torch.load(path, map_location="cpu", weights_only=True, mmap=True)
            except RuntimeError as e:
                if "mmap" not in str(e):
                    raise
                obj = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError:
        if not _looks_pickled(path):  # damaged or another kind of file, not a refused object
            raise CorruptModelError(f"{name} cannot be read as a checkpoint: it is no torch or pickle file") from None
        raise UnsafePickleError(
            f"{name} holds Python objects besides tensors, and loading them could run code, so Alloy reads "
            "nothing from it. If you trust its source, convert it to .safetensors with a tool you trust "
            "(in an environment where its code may run) and merge that file"
        ) from None
    except (RuntimeError, EOFError, ValueError, OSError) as e:
        raise CorruptModelError(f"{name} cannot be read as a checkpoint: {_first_line(e)}") from None
    dropped: list[str] = []
    if isinstance(obj, dict) and isinstance(obj.get("state_dict"), dict):
        dropped = [str(k) for k in obj if k != "state_dict"]
        obj = obj["state_dict"]
    if not isinstance(obj, dict):
        raise CorruptModelError(f"{name} does not hold a state dict")
    state = {k: v for k, v in obj.items() if isinstance(k, str) and isinstance(v, torch.Tensor)}
    return state, dropped + [str(k) for k in obj if k not in state]


def _looks_pickled(path: str) -> bool:
    """A torch zip archive, or a bare pickle (which starts with its PROTO opcode)."""
    with open(path, "rb") as f:
        head = f.read(4)
    return head.startswith(b"PK\x03\x04") or head[:1] == b"\x80"


def _first_line(e: BaseException) -> str:
    text = str(e).strip().splitlines()
    return text[0] if text else type(e).__name__
