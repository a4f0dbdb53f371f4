"""Temporary files beside their target, publishing without replacing, and cleaning what a kill left.

Every file Alloy writes is first written to ``<target>.alloy-tmp-<pid>-<hex>`` in the target's folder.
The writing process holds an exclusive advisory lock (``flock``) on it until the file has its real
name; the kernel drops that lock when the process dies, even by ``kill -9``. A temporary file is
stale, and may be removed, only when its process is gone and nobody holds its lock, so a live
writer's file (another merge, another WebUI) is never taken.

Publishing without ``overwrite`` links the finished file to its name (``link`` fails when the name
exists, atomically) or, where a filesystem has no hard links, renames with ``RENAME_NOREPLACE``.
"""

from __future__ import annotations

import contextlib
import ctypes
import errno
import os
import re
import secrets
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import BinaryIO

from lib_merge.errors import OutputExistsError, UnsafeNameError, UnsafePathError

TEMP_MARK = ".alloy-tmp-"
_TEMP_NAME = re.compile(r"\.alloy-tmp-(\d+)-[0-9a-f]+$")

try:
    import fcntl
except ImportError:  # Windows: an open file cannot be deleted there, so the PID check suffices
    fcntl = None


def temp_path_for(target: str) -> str:
    folder, name = os.path.split(os.path.abspath(target))
    return os.path.join(folder, f"{name}{TEMP_MARK}{os.getpid()}-{secrets.token_hex(4)}")


def is_temp_name(name: str) -> bool:
    return _TEMP_NAME.search(name) is not None


class TempFile:
    """A new, locked temporary file for `target`, whose name is recorded before the file exists.

    So an interrupt at any moment (Ctrl+C lands between any two steps) leaves nothing that
    `discard` does not remove. The name carries our PID: no other live process has a file of
    that name, so `discard` can only ever remove ours (or a dead process's leftover)."""

    def __init__(self, target: str):
        self.target = target
        self.path = ""
        self.file: BinaryIO | None = None

    def create(self) -> BinaryIO:
        while True:
            self.path = temp_path_for(self.target)
            try:
                self.file = open(self.path, "xb")  # noqa: SIM115 - held until `seal` or `discard`
                break
            except FileExistsError:
                continue
        if fcntl is not None:
            fcntl.flock(self.file.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
        return self.file

    def discard(self) -> None:
        if self.file is not None and not self.file.closed:
            self.file.close()
        if self.path:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(self.path)


def publish(tmp: str, target: str, overwrite: bool) -> None:
    """Give the finished `tmp` its real name. Without `overwrite` an existing `target` is never
    replaced, even one that appeared a moment ago: OutputExistsError, and `tmp` is left to the caller."""
    if overwrite:
        os.replace(tmp, target)
        return
    try:
        os.link(tmp, target)
    except FileExistsError:
        raise _exists(target) from None
    except OSError as e:
        if e.errno not in (errno.EPERM, errno.ENOTSUP, errno.EOPNOTSUPP, errno.EXDEV, errno.ENOSYS, errno.EMLINK):
            raise
        _rename_no_replace(tmp, target)  # a filesystem without hard links (FAT, exFAT, some network shares)
        return
    os.unlink(tmp)


def _exists(target: str) -> OutputExistsError:
    return OutputExistsError(f"{target} exists; choose another name")


def _rename_no_replace(tmp: str, target: str) -> None:
    if os.name == "nt":  # Windows' rename never replaces
        try:
            os.rename(tmp, target)
        except FileExistsError:
            raise _exists(target) from None
        return
    libc = ctypes.CDLL(None, use_errno=True)
    renameat2 = getattr(libc, "renameat2", None)
    if renameat2 is None:
        raise UnsafePathError(
            f"cannot save {target} without the risk of replacing another file on this filesystem "
            "(no hard links, no no-replace rename); save to another folder or allow replacing it"
        )
    at_fdcwd, rename_noreplace = -100, 1
    if renameat2(at_fdcwd, os.fsencode(tmp), at_fdcwd, os.fsencode(target), rename_noreplace) != 0:
        code = ctypes.get_errno()
        if code == errno.EEXIST:
            raise _exists(target)
        raise OSError(code, os.strerror(code), target)


def pid_alive(pid: int) -> bool:
    """Whether a process with this id runs now (a reused id counts as alive: the safe side)."""
    if pid <= 0:
        return False
    if os.name == "nt":
        kernel32 = ctypes.windll.kernel32  # type: ignore[attr-defined]
        handle = kernel32.OpenProcess(0x1000, False, pid)  # PROCESS_QUERY_LIMITED_INFORMATION
        if not handle:
            return ctypes.GetLastError() == 5  # access denied: it exists
        code = ctypes.c_ulong()
        kernel32.GetExitCodeProcess(handle, ctypes.byref(code))
        kernel32.CloseHandle(handle)
        return code.value == 259  # STILL_ACTIVE
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


@contextlib.contextmanager
def _stale_lock(path: str) -> Iterator[bool]:
    """Yields True while holding the lock of a temporary file whose writer is gone."""
    match = _TEMP_NAME.search(os.path.basename(path))
    if match is None or pid_alive(int(match.group(1))):
        yield False
        return
    if fcntl is None:
        yield True
        return
    try:
        f = open(path, "rb")  # noqa: SIM115
    except OSError:
        yield False
        return
    with f:
        try:
            fcntl.flock(f.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:  # held: a writer in another PID namespace (a container) is still at work
            yield False
            return
        yield True


@dataclass
class CleanReport:
    removed: list[str] = field(default_factory=list)
    freed: int = 0  # bytes given back (a leftover hard link of a published file frees nothing)
    failed: list[str] = field(default_factory=list)

    def text(self, where: str) -> str:
        if not self.removed:
            return f"no stale temporary files in {where}"
        return (
            f"removed {len(self.removed)} stale temporary file{'s' if len(self.removed) != 1 else ''} "
            f"in {where}, freed {format_bytes(self.freed)}"
        )

    def add(self, other: CleanReport) -> None:
        self.removed += other.removed
        self.freed += other.freed
        self.failed += other.failed


def clean_stale(folder: str, recursive: bool = False) -> CleanReport:
    """Remove the temporary files of dead processes in `folder` (and below it, with `recursive`)."""
    report = CleanReport()
    try:
        walker = os.walk(folder) if recursive else [(folder, [], os.listdir(folder))]
        for here, dirs, files in walker:
            dirs[:] = [d for d in dirs if not d.startswith(".")]
            for name in files:
                if is_temp_name(name):
                    _remove_if_stale(os.path.join(here, name), report)
    except OSError:
        pass  # a folder that cannot be listed holds nothing we can clean
    return report


def remove_own_temp_files(folder: str) -> CleanReport:
    """Remove this process's temporary files in `folder` and below: for a process about to end without
    unwinding (a server past its grace period), whose writers will never finish."""
    report = CleanReport()
    mine = f"{TEMP_MARK}{os.getpid()}-"
    for here, dirs, files in os.walk(folder):
        dirs[:] = [d for d in dirs if not d.startswith(".")]
        for name in files:
            if mine in name and is_temp_name(name):
                try:
                    os.unlink(os.path.join(here, name))
                    report.removed.append(os.path.join(here, name))
                except OSError:
                    report.failed.append(os.path.join(here, name))
    return report


def _remove_if_stale(path: str, report: CleanReport) -> None:
    with _stale_lock(path) as stale:
        if not stale:
            return
        try:
            st = os.lstat(path)
            os.unlink(path)
        except OSError:
            report.failed.append(path)
            return
        report.removed.append(path)
        if st.st_nlink <= 1:
            report.freed += st.st_size


def format_bytes(n: int) -> str:
    for unit, size in (("GB", 2**30), ("MB", 2**20), ("KB", 2**10)):
        if n >= size:
            return f"{n / size:,.1f} {unit}"
    return f"{n} bytes"


def seal(
    f: BinaryIO,
    tmp: str,
    target: str,
    overwrite: bool,
    before_publish: Callable[[os.stat_result], None] | None = None,
) -> None:
    """Make the written temporary file durable and give it its name (see `publish`), then close it.

    The lock is held until the file has its name (Windows renames no open file, so it closes first);
    `before_publish` sees the finished file's stat just before. On failure the caller cleans up."""
    f.flush()
    os.fsync(f.fileno())
    if before_publish is not None:
        before_publish(os.fstat(f.fileno()))
    if os.name == "nt":
        f.close()
    publish(tmp, target, overwrite)
    f.close()
    _fsync_folder(os.path.dirname(target))


def _fsync_folder(folder: str) -> None:
    if os.name != "posix":
        return
    fd = os.open(folder, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def write_file(
    target: str,
    write: Callable[[BinaryIO], None],
    overwrite: bool = True,
    before_publish: Callable[[os.stat_result], None] | None = None,
) -> str:
    """Write a file through a locked temporary file; `overwrite=False` never replaces `target`."""
    target = os.path.abspath(target)
    temp = TempFile(target)
    try:
        f = temp.create()
        write(f)
        seal(f, temp.path, target, overwrite, before_publish)
    except BaseException:
        temp.discard()
        raise
    return target


def write_text(target: str, text: str, overwrite: bool = True) -> str:
    return write_file(target, lambda f: f.write(text.encode("utf-8")), overwrite)


# Endings the WebUI (and every loader that goes by the name) reads as a pickle; anything else is
# offered to the safetensors loader, so a file's ending must match the bytes inside it.
PICKLE_ENDINGS = (".ckpt", ".pt", ".pth", ".bin")


def format_for_output(output: str, requested: str | None = None) -> str:
    """The file format of a model written to `output`: its ending decides ("ckpt" for a pickle ending,
    else "safetensors"); a `requested` format must agree with the ending."""
    ending = os.path.splitext(output)[1].lower()
    named = "ckpt" if ending in PICKLE_ENDINGS else "safetensors" if ending == ".safetensors" else None
    if requested and named and requested != named:
        wanted = ".safetensors" if requested == "safetensors" else ".ckpt"
        raise UnsafeNameError(
            f"{output} ends in {ending} but would hold {requested}; loaders choose by the ending: use {wanted}"
        )
    return requested or named or "safetensors"


def check_new_output(output: str, sources: list[str], overwrite: bool, writes: str | None = None) -> str:
    """Before the work: the output is no folder, its folder exists, it is none of the inputs, it is new
    unless `overwrite`, and (for a model, `writes` = its format) its ending matches the format.
    Returns the absolute path."""
    target = os.path.abspath(output)
    if os.path.isdir(target):
        raise UnsafePathError(f"{target} is a folder; give a file name, such as {os.path.join(output, 'merged')}")
    if not os.path.isdir(os.path.dirname(target)):
        raise UnsafePathError(f"output folder does not exist: {os.path.dirname(target)}")
    if writes:
        format_for_output(output, writes)
    if os.path.exists(target):
        for source in sources:
            if os.path.exists(source) and os.path.samefile(target, source):
                raise UnsafePathError(f"output would overwrite the input {source}")
        if not overwrite:
            raise _exists(target)
    return target
