"""Which key layout a file merge writes (arch.layouts), decided before anything is read."""

from __future__ import annotations

from lib_merge.arch.layouts import LAYOUT_FAMILIES, LAYOUT_LABELS, LAYOUTS, SINGLE_FILE, stored_parts
from lib_merge.errors import ArchMismatchError, ParameterError
from lib_merge.io.writer import PlannedTensor


def output_layout(sources: list, roles: list[str], asked: str | None) -> str:
    """The layout a file merge writes: the one asked for, else the inputs' own one; inputs in
    different layouts are refused unless a layout is asked for (before anything is read)."""
    primary = sources[0]
    if asked is not None:
        if asked not in LAYOUTS:
            raise ParameterError(f"unknown layout {asked!r}; valid: {', '.join(LAYOUTS)}")
        if asked not in LAYOUT_FAMILIES.get(primary.arch.id, (SINGLE_FILE,)):
            label = primary.arch.label
            raise ParameterError(f"layout {asked!r} is not one Alloy writes for {label} (model A)")
        return asked
    for role, source in zip(roles[1:], sources[1:]):
        if source.layout != primary.layout:
            raise ArchMismatchError(
                f"model A ({primary.name}) is in the {LAYOUT_LABELS[primary.layout]}, model {role} ({source.name}) "
                f"in the {LAYOUT_LABELS[source.layout]}: give a layout to write ({', '.join(LAYOUTS)}) "
                "and both are converted"
            )
    return primary.layout


def left_out(layout: str, plan: list[PlannedTensor]) -> int:
    """How many merged tensors a file of `layout` cannot hold (text encoders and VAE beside a transformer)."""
    parts = stored_parts(layout, [p.key for p in plan])
    return sum(1 for p in plan if p.key not in parts)
