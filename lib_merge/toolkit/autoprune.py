"""Autoprune a folder: each checkpoint in it pruned to fp16 safetensors and moved where it belongs.

A source is deleted only after its output is written, re-opened and its header checked; any failure
moves the source to `Failed/` with `<name>.error.txt` beside it, so nothing the user had is lost.
"""

from __future__ import annotations

import contextlib
import os
import shutil
from collections.abc import Callable, Iterator
from dataclasses import dataclass

from lib_merge.errors import AlloyError, ArchMismatchError, BusyError, CorruptModelError
from lib_merge.io import open_model
from lib_merge.io.source import SourceModel
from lib_merge.io.tempfiles import write_text
from lib_merge.toolkit.layout import component_file
from lib_merge.toolkit.prune import RewriteOptions, prune_file

try:
    import fcntl
except ImportError:
    fcntl = None

EXTENSIONS = (".safetensors", ".ckpt", ".pt", ".pth")
FAILED = "Failed"
LOCK_NAME = ".alloy-autoprune.lock"


@dataclass(frozen=True)
class Destinations:
    """Where outputs go: checkpoints, VAEs, other components."""

    checkpoints: str
    vae: str
    components: str

    @classmethod
    def under(cls, models_dir: str) -> Destinations:
        """The WebUI's layout (models/Stable-diffusion, models/VAE) when DIR has it, else DIR itself for
        checkpoints with VAE/ and Components/ inside it."""
        webui = os.path.join(models_dir, "Stable-diffusion")
        if os.path.isdir(webui):
            return cls(webui, os.path.join(models_dir, "VAE"), os.path.join(models_dir, "Components"))
        return cls(models_dir, os.path.join(models_dir, "VAE"), os.path.join(models_dir, "Components"))


@dataclass
class AutopruneResult:
    source: str
    output: str | None  # the pruned file, or None when it failed
    message: str

    @property
    def ok(self) -> bool:
        return self.output is not None


def autoprune(folder: str, dest: Destinations, progress: Callable[[str], None] | None = None) -> list[AutopruneResult]:
    """Every checkpoint file directly in `folder`, in name order; one autoprune per folder at a time."""
    with _folder_lock(folder):
        return _autoprune(folder, dest, progress)


@contextlib.contextmanager
def _folder_lock(folder: str) -> Iterator[None]:
    """An exclusive lock on the folder's `.alloy-autoprune.lock` (two runs would prune a file twice)."""
    if fcntl is None:  # Windows: an open file cannot be deleted there, so a second run fails on its own
        yield
        return
    with open(os.path.join(folder, LOCK_NAME), "a") as handle:
        try:
            fcntl.flock(handle.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise BusyError(f"autoprune is already running on {folder}") from None
        yield


def _autoprune(folder: str, dest: Destinations, progress: Callable[[str], None] | None) -> list[AutopruneResult]:
    results = []
    for name in sorted(os.listdir(folder)):
        path = os.path.join(folder, name)
        if not (os.path.isfile(path) and name.lower().endswith(EXTENSIONS)):
            continue
        if progress is not None:
            progress(name)
        try:
            output = _prune_one(path, dest)
        except (AlloyError, OSError) as e:
            results.append(AutopruneResult(path, None, _fail(path, folder, e)))
        else:
            results.append(AutopruneResult(path, output, f"{name} → {output}"))
    return results


def _prune_one(path: str, dest: Destinations) -> str:
    folder = _destination(path, dest)
    os.makedirs(folder, exist_ok=True)
    target = free_name(folder, os.path.splitext(os.path.basename(path))[0] + ".safetensors")
    report = prune_file(path, target, RewriteOptions(fix_position_ids=True))
    try:
        _verify(target, report.written.keys)
    except BaseException:
        os.unlink(target)  # the output we wrote is bad; the source stays
        raise
    os.unlink(path)
    return target


def _destination(path: str, dest: Destinations) -> str:
    source = SourceModel(path)
    try:
        if source.arch.arch is not None:
            return dest.checkpoints
        found = component_file(source.shapes)
        if found is None:
            raise ArchMismatchError(f"{source.name}: no checkpoint or component file Alloy knows")
        return dest.vae if found.component == "vae" else dest.components
    finally:
        source.close()


def _verify(target: str, keys: int) -> None:
    """The written file opens, and its header lists the tensors written."""
    written = open_model(target)
    try:
        if len(written.keys()) != keys:
            raise CorruptModelError(f"{target}: {len(written.keys())} tensors in the header, {keys} written")
    finally:
        written.close()


def free_name(folder: str, name: str) -> str:
    """`name` in `folder`, or `stem (1).ext`, `stem (2).ext`… when taken."""
    stem, ext = os.path.splitext(name)
    candidate, n = os.path.join(folder, name), 0
    while os.path.exists(candidate):
        n += 1
        candidate = os.path.join(folder, f"{stem} ({n}){ext}")
    return candidate


def _fail(path: str, folder: str, error: BaseException) -> str:
    """Move the source to Failed/ with the reason beside it."""
    failed = os.path.join(folder, FAILED)
    os.makedirs(failed, exist_ok=True)
    moved = free_name(failed, os.path.basename(path))
    shutil.move(path, moved)
    message = str(error) or type(error).__name__
    write_text(moved + ".error.txt", message + "\n")
    return f"{os.path.basename(path)} failed: {message} (moved to {moved})"
