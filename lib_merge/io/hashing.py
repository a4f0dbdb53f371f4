"""File hashes as the WebUI computes them, cached by (path, size, mtime_ns) in hashes.json."""

from __future__ import annotations

import hashlib
import json
import os
import threading
from collections.abc import Callable
from pathlib import Path

from lib_merge.io.tempfiles import write_text
from lib_merge.paths import user_data_dir

_CHUNK = 16 * 1024 * 1024
_LOCK = threading.Lock()  # one writer of hashes.json per process


def _cache_file() -> Path:
    return user_data_dir() / "hashes.json"


def _identity(path: str) -> tuple[str, int, int]:
    st = os.stat(path)
    return os.path.realpath(path), st.st_size, st.st_mtime_ns


def _read_cache() -> dict:
    try:
        data = json.loads(_cache_file().read_text(encoding="utf-8"))
        return data if isinstance(data, dict) else {}
    except (OSError, ValueError):
        return {}


def cached_sha256(path: str) -> str | None:
    real, size, mtime = _identity(path)
    entry = _read_cache().get(real)
    if isinstance(entry, dict) and entry.get("size") == size and entry.get("mtime_ns") == mtime:
        return entry.get("sha256")
    return None


def file_sha256(path: str, progress: Callable[[int, int], None] | None = None) -> str:
    """sha256 of the whole file (the value the WebUI shows), computed once per file version;
    `progress(done, total)` hears of the bytes hashed."""
    hit = cached_sha256(path)
    if hit:
        return hit
    real, size, mtime = _identity(path)
    h = hashlib.sha256()
    done = 0
    with open(path, "rb", buffering=0) as f:
        buf = bytearray(_CHUNK)
        view = memoryview(buf)
        while n := f.readinto(buf):
            h.update(view[:n])
            done += n
            if progress is not None:
                progress(done, size)
    digest = h.hexdigest()
    _store(real, {"size": size, "mtime_ns": mtime, "sha256": digest})
    return digest


def _store(real: str, entry: dict) -> None:
    with _LOCK:
        cache = _read_cache()
        cache[real] = entry
        target = _cache_file()
        try:
            target.parent.mkdir(parents=True, exist_ok=True)
            write_text(str(target), json.dumps(cache, indent=1))
        except OSError:
            pass  # a cache that cannot be written only costs time


def legacy_hash(path: str) -> str:
    """The WebUI's old 8-hex model hash: sha256 of 64 KiB at offset 1 MiB."""
    with open(path, "rb") as f:
        f.seek(0x100000)
        return hashlib.sha256(f.read(0x10000)).hexdigest()[:8]
