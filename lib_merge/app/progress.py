"""What the running job does now, as one status line with an ETA."""

from __future__ import annotations

import time
from dataclasses import dataclass, field

from lib_merge.engine.progress import ProgressEvent


@dataclass
class Progress:
    """What the running job does now, for status lines: a stage and the latest event of each phase."""

    stage: str = "idle"  # "merging into the loaded model", "saving NAME"
    events: dict[str, ProgressEvent] = field(default_factory=dict)
    started: dict[str, float] = field(default_factory=dict)

    def update(self, event: ProgressEvent) -> None:
        self.started.setdefault(event.phase, time.monotonic())
        self.events[event.phase] = event

    def text(self) -> str:
        running = [e for e in self.events.values() if e.done < e.total]
        shown = running or list(self.events.values())[-1:]
        details = "; ".join(_describe(e, self.started[e.phase], self.stage) for e in shown)
        return f"{self.stage}: {details}" if details else self.stage


def _describe(event: ProgressEvent, started: float, stage: str) -> str:
    mb = 2**20
    if event.unit == "bytes":
        text = f"hashing {event.item} {event.done / mb:,.0f}/{event.total / mb:,.0f} MB"
    else:
        phase = "" if stage.startswith(event.phase) else f"{event.phase} "
        text = f"{phase}{event.done:,}/{event.total:,} {event.unit}"
        if event.bytes_total:
            text += f", {event.bytes_done / mb:,.0f}/{event.bytes_total / mb:,.0f} MB"
        if event.item and event.unit != "layers":
            text += f", {event.item}"
    # Keys differ in size by a thousand times: the bytes tell the share of the work done.
    if event.bytes_total:
        share = event.bytes_done / event.bytes_total
    else:
        share = event.done / event.total if event.total else 0.0
    elapsed = time.monotonic() - started
    if 0.02 <= share < 1 and elapsed > 1:
        text += f", ETA {elapsed / share * (1 - share):,.0f} s"
    return text
