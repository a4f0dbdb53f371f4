"""Ctrl-C and SIGTERM in the command line: raised in the main thread, never inside a thread pool's locks.

A Python signal handler runs between two bytecodes of the main thread, wherever it is. Raised inside
threading's own Python code (`Condition.__enter__` has taken its lock, and the caller's `with` is not
yet set up to release it), the exception leaves that lock held: a thread-pool worker then waits for it
forever and the merge never ends (seen: a Ctrl-C during `ThreadPoolExecutor.submit`). When the main
thread is in that code, the handler tries again 5 ms later (a timer signal, where the platform has
one), by when it has left. Blocking waits (`Condition.wait`, `Thread.join`) clean up after an
exception, so a signal still interrupts them at once.
"""

from __future__ import annotations

import os
import signal
import threading
from types import FrameType

from lib_merge.surfaces.cli.errors import Terminated

RETRY_SECONDS = 0.005
THREADING = os.sep + "threading.py"
WAITS = frozenset({"wait", "join", "_wait_for_tstate_lock"})  # threading's blocking waits: safe to interrupt


def handle_signals(signals: list[str]) -> dict:
    """SIGINT raises KeyboardInterrupt and SIGTERM Terminated in the main thread, each noted in `signals`;
    a second signal during the cleanup is ignored. Returns the handlers to put back."""
    if threading.current_thread() is not threading.main_thread():
        return {}
    retry = hasattr(signal, "setitimer")

    def handler(outcome: str, error: type[BaseException]):
        def handle(signum: int, frame: FrameType | None) -> None:
            if retry and in_lock_code(frame):
                signal.signal(signal.SIGALRM, lambda _signum, later: handle(signum, later))
                signal.setitimer(signal.ITIMER_REAL, RETRY_SECONDS)
                return
            signal.signal(signal.SIGINT, signal.SIG_IGN)
            signal.signal(signal.SIGTERM, signal.SIG_IGN)
            signals.append(outcome)
            raise error

        return handle

    previous = {
        signal.SIGINT: signal.signal(signal.SIGINT, handler("cancelled", KeyboardInterrupt)),
        signal.SIGTERM: signal.signal(signal.SIGTERM, handler("terminated", Terminated)),
    }
    if retry:
        previous[signal.SIGALRM] = signal.getsignal(signal.SIGALRM)
    return previous


def in_lock_code(frame: FrameType | None) -> bool:
    """Whether the interrupted code is threading's own, between taking and handing over a lock."""
    return frame is not None and frame.f_code.co_filename.endswith(THREADING) and frame.f_code.co_name not in WAITS


def restore_signals(previous: dict) -> None:
    """Put back the handlers `handle_signals` replaced, with no retry timer left running."""
    if previous and hasattr(signal, "setitimer"):
        signal.setitimer(signal.ITIMER_REAL, 0)
    for signum, handler in previous.items():
        signal.signal(signum, handler)
