"""One component of a checkpoint to its own file, or replaced by the same component of another file.

A component file holds the component's keys without the checkpoint's prefix (a VAE's `encoder.*`,
`decoder.*`; a UNet's `input_blocks.*`; a CLIP-L's `text_model.*`), as standalone files are named.
Replacing takes the component from a full checkpoint or a component file; the key sets and shapes
must match exactly, every other tensor of the target is copied unchanged.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

from lib_merge.errors import ArchMismatchError, ParameterError, ShapeMismatchError
from lib_merge.io.source import SourceModel
from lib_merge.io.tempfiles import check_new_output
from lib_merge.toolkit.layout import component_file
from lib_merge.toolkit.rewrite import Copy, Progress, RewriteReport, rewrite


@dataclass(frozen=True)
class ComponentKeys:
    """A component inside one file: its keys as stored and without the prefix."""

    name: str
    by_bare: dict[str, str]  # key without the component prefix -> key in the file


def find_component(source: SourceModel, component: str) -> ComponentKeys:
    """The component's keys in a full checkpoint or in a component file; an error names what the file has."""
    arch = source.arch.arch
    if arch is not None:
        if component not in arch.components:
            have = ", ".join(arch.components)
            raise ParameterError(f"{source.name} is {arch.label}, whose components are {have}; it has no {component}")
        prefix = arch.components[component]
        keys = {k[len(prefix) :]: k for k in source.keys if arch.component_of(k) == component}
        if not keys:
            raise ParameterError(f"{source.name} has no {component} keys")
        return ComponentKeys(component, keys)
    found = component_file(source.shapes, component)
    if found is None or found.component != component:
        what = f"a {found.component} component file" if found else "no checkpoint or component file Alloy knows"
        raise ArchMismatchError(f"{source.name} is {what}, not {component}")
    return ComponentKeys(component, {k: k for k in source.keys})


def extract_component(
    path: str, component: str, output: str | None, overwrite: bool = False, progress: Progress | None = None
) -> RewriteReport:
    """`<stem>.<component>.safetensors` (or `output`) holding the component without its prefix."""
    source = SourceModel(path)
    try:
        found = find_component(source, component)
        target = output or f"{os.path.splitext(source.path)[0]}.{component}.safetensors"
        target = check_new_output(target, [source.path], overwrite, writes="safetensors")
        copies = [Copy(bare, source, key, source.info(key).dtype) for bare, key in sorted(found.by_bare.items())]
        return rewrite(target, copies, {"format": "pt"}, overwrite, progress=progress)
    finally:
        source.close()


def replace_component(
    path: str,
    component: str,
    donor_path: str,
    output: str,
    overwrite: bool = False,
    progress: Progress | None = None,
) -> RewriteReport:
    """`path` with `component` taken from `donor_path`, in the target's dtypes; all else copied unchanged."""
    target_model, donor = SourceModel(path), SourceModel(donor_path)
    try:
        mine = find_component(target_model, component)
        theirs = find_component(donor, component)
        _check_same_layout(mine, theirs, target_model, donor)
        out = check_new_output(output, [target_model.path, donor.path], overwrite, writes="safetensors")
        from_donor = {key: theirs.by_bare[bare] for bare, key in mine.by_bare.items()}
        copies = [
            Copy(key, donor, from_donor[key], target_model.info(key).dtype)
            if key in from_donor
            else Copy(key, target_model, key, target_model.info(key).dtype)
            for key in target_model.keys
        ]
        return rewrite(out, copies, dict(target_model.metadata), overwrite, progress=progress)
    finally:
        target_model.close()
        donor.close()


def _check_same_layout(mine: ComponentKeys, theirs: ComponentKeys, a: SourceModel, b: SourceModel) -> None:
    only_mine = sorted(set(mine.by_bare) - set(theirs.by_bare))
    only_theirs = sorted(set(theirs.by_bare) - set(mine.by_bare))
    if only_mine or only_theirs:
        listed = [f"only in {a.name}: {k}" for k in only_mine[:5]] + [f"only in {b.name}: {k}" for k in only_theirs[:5]]
        raise ShapeMismatchError(
            f"the {mine.name} of {b.name} does not fit {a.name}: {len(only_mine)} keys only in {a.name}, "
            f"{len(only_theirs)} only in {b.name} ({'; '.join(listed[:5])})"
        )
    shapes = [
        f"{bare}: {tuple(a.info(key).shape)} vs {tuple(b.info(theirs.by_bare[bare]).shape)}"
        for bare, key in sorted(mine.by_bare.items())
        if tuple(a.info(key).shape) != tuple(b.info(theirs.by_bare[bare]).shape)
    ]
    if shapes:
        raise ShapeMismatchError(f"the {mine.name} of {b.name} has other shapes: {'; '.join(shapes[:5])}")


def build_checkpoint(
    arch_id: str,
    parts: dict[str, str],
    output: str,
    overwrite: bool = False,
    progress: Progress | None = None,
) -> RewriteReport:
    """A full checkpoint of `arch_id` from one file per component (component files or checkpoints); every
    component the architecture has must be given."""
    from lib_merge.arch.registry import ARCHITECTURES

    arch = ARCHITECTURES.get(arch_id)
    if arch is None:
        raise ParameterError(f"unknown architecture {arch_id!r}: choose {', '.join(ARCHITECTURES)}")
    unknown = sorted(set(parts) - set(arch.components))
    if unknown:
        raise ParameterError(
            f"{arch.label} has no {', '.join(unknown)}; its components are {', '.join(arch.components)}"
        )
    missing = [name for name in arch.components if name not in parts]
    if missing:
        raise ParameterError(f"a {arch.label} checkpoint needs its {', '.join(missing)} too")
    sources = {name: SourceModel(path) for name, path in parts.items()}
    try:
        target = check_new_output(output, [s.path for s in sources.values()], overwrite, writes="safetensors")
        copies = []
        for name, prefix in arch.components.items():
            found = find_component(sources[name], name)
            copies += [Copy(prefix + bare, sources[name], key, sources[name].info(key).dtype)
                       for bare, key in sorted(found.by_bare.items())]  # fmt: skip
        return rewrite(target, copies, {"format": "pt"}, overwrite, progress=progress)
    finally:
        for source in sources.values():
            source.close()
