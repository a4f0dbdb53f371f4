"""The command line's own exit codes and exceptions (AlloyError subclasses carry theirs)."""

from __future__ import annotations

EXIT_USAGE = 2
EXIT_UNEXPECTED = 1
EXIT_CANCELLED = 130
EXIT_TERMINATED = 143
EXIT_BROKEN_PIPE = 141


class UsageError(Exception):
    pass


class Terminated(BaseException):
    """SIGTERM arrived: unwinds like KeyboardInterrupt, so every cleanup runs."""
