"""The reservation queue: plots kept in a JSON file that survives a restart.

Every change is written atomically (temporary file, then rename). A row found `running` when the
file is loaded was cut off by a restart and becomes `interrupted`. One worker thread runs the
`waiting` rows in order; a failing plot is marked `error` with its message and the queue goes on.
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path

from lib_merge.errors import ParameterError
from lib_merge.io.tempfiles import write_text

RETRYABLE = ("error", "stopped", "interrupted")
FINISHED = ("done", "error", "stopped", "interrupted")


@dataclass
class QueueRow:
    id: int
    created: str
    status: str  # waiting → running → done | error | stopped | interrupted
    label: str
    plan: dict
    message: str = ""


class ReservationQueue:
    def __init__(self, path: Path):
        self.path = Path(path)
        self._lock = threading.RLock()
        self._worker: threading.Thread | None = None
        self.rows: list[QueueRow] = self._load()

    # -- storage ---------------------------------------------------------------------------
    def _load(self) -> list[QueueRow]:
        if not self.path.is_file():
            return []
        try:
            data = json.loads(self.path.read_text(encoding="utf-8"))
            rows = [QueueRow(**row) for row in data.get("rows", [])]
        except (OSError, ValueError, TypeError) as e:
            raise ParameterError(f"{self.path}: not a readable XYZ queue ({e}); move it away to start afresh") from None
        for row in rows:
            if row.status == "running":
                row.status, row.message = "interrupted", "the WebUI stopped while this plot ran"
        return rows

    def _save(self) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        write_text(str(self.path), json.dumps({"rows": [asdict(r) for r in self.rows]}, indent=1))

    # -- editing ---------------------------------------------------------------------------
    def add(self, plan: dict, label: str) -> QueueRow:
        with self._lock:
            row = QueueRow(
                max((r.id for r in self.rows), default=0) + 1,
                time.strftime("%Y-%m-%d %H:%M:%S"),
                "waiting",
                label,
                plan,
            )
            self.rows.append(row)
            self._save()
            return row

    def _find(self, ident: int) -> QueueRow:
        if ident == -1 and self.rows:
            return self.rows[-1]
        for row in self.rows:
            if row.id == ident:
                return row
        raise ParameterError(f"no queued plot with id {ident}")

    def delete(self, which: str | int) -> int:
        """Delete by id, -1 (the last row) or "all"; a running plot stays."""
        with self._lock:
            before = len(self.rows)
            if str(which).strip().lower() == "all":
                self.rows = [r for r in self.rows if r.status == "running"]
            else:
                row = self._find(_ident(which))
                if row.status == "running":
                    raise ParameterError(f"plot {row.id} is running; stop it first")
                self.rows.remove(row)
            self._save()
            return before - len(self.rows)

    def move(self, ident: int, step: int) -> None:
        with self._lock:
            row = self._find(_ident(ident))
            i = self.rows.index(row)
            j = max(0, min(len(self.rows) - 1, i + step))
            self.rows.insert(j, self.rows.pop(i))
            self._save()

    def retry(self, ident: int) -> None:
        with self._lock:
            row = self._find(_ident(ident))
            if row.status not in RETRYABLE:
                raise ParameterError(f"plot {row.id} is {row.status}; only {', '.join(RETRYABLE)} plots can be retried")
            row.status, row.message = "waiting", ""
            self._save()

    def clear_finished(self) -> int:
        with self._lock:
            before = len(self.rows)
            self.rows = [r for r in self.rows if r.status not in FINISHED]
            self._save()
            return before - len(self.rows)

    def set_status(self, ident: int, status: str, message: str = "") -> None:
        with self._lock:
            row = self._find(ident)
            row.status, row.message = status, message
            self._save()

    def table(self) -> list[list]:
        with self._lock:
            return [[r.id, r.created, r.status, r.label, r.message] for r in self.rows]

    # -- running -----------------------------------------------------------------------------
    def next_waiting(self) -> QueueRow | None:
        with self._lock:
            return next((r for r in self.rows if r.status == "waiting"), None)

    def run_waiting(self, run: Callable[[dict], str], stop: threading.Event | None = None) -> int:
        """Run every waiting row in order; `run(plan)` returns a message or raises. Returns rows run."""
        count = 0
        while not (stop and stop.is_set()):
            with self._lock:
                row = self.next_waiting()
                if row is None:
                    break
                row.status, row.message = "running", ""
                self._save()
            try:
                message = run(row.plan)
                status = "stopped" if stop and stop.is_set() else "done"
                self.set_status(row.id, status, message)
            except Exception as e:  # noqa: BLE001 - one failing plot must not stop the queue
                self.set_status(row.id, "error", str(e) or type(e).__name__)
            count += 1
        return count

    def start(self, run: Callable[[dict], str], stop: threading.Event | None = None) -> bool:
        """Run the waiting rows in a background thread; False when a worker is already running."""
        with self._lock:
            if self._worker is not None and self._worker.is_alive():
                return False
            self._worker = threading.Thread(
                target=self.run_waiting, args=(run, stop), daemon=True, name="alloy-xyz-queue"
            )
            self._worker.start()
            return True

    def running(self) -> bool:
        return self._worker is not None and self._worker.is_alive()

    def join(self, timeout: float | None = None) -> None:
        if self._worker is not None:
            self._worker.join(timeout)


def _ident(value) -> int:
    try:
        return int(str(value).strip())
    except ValueError:
        raise ParameterError(f"give a queue id, -1 for the last row, or all; not {value!r}") from None
