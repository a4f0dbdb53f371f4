"""File names of merges: the automatic name, sanitising, and custom names.

A merge's name is what the WebUI shows in its model list and infotext, so it must be
readable, safe on every file system, and carry the recipe's short hash to stay unique.
"""

from __future__ import annotations

import os
import re
import unicodedata

from lib_merge.errors import UnsafeNameError
from lib_merge.methods import MODE_ALIASES
from lib_merge.recipe.nodes import BlocksSpec, MergeNode, Node, walk_merges, walk_models
from lib_merge.recipe.vectors import BlockVector, format_number

MAX_STEM = 120
_ALLOWED = set("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789._+-")
_WINDOWS_RESERVED = {"CON", "PRN", "AUX", "NUL"} | {f"{p}{i}" for p in ("COM", "LPT") for i in range(1, 10)}
_SHORT_METHOD = {name: alias for alias, name in MODE_ALIASES.items()}
EXTENSIONS = {"safetensors": ".safetensors", "ckpt": ".ckpt"}
POST_OPS = ("adjust", "clip")


def sanitize(text: str) -> str:
    text = unicodedata.normalize("NFC", text)
    out = "".join(ch if ch in _ALLOWED or (not ch.isascii() and ch.isalnum()) else "_" for ch in text)
    out = re.sub(r"_+", "_", out).strip("._")
    return out


def _fit(readable: str, suffix: str) -> str:
    stem = readable[: MAX_STEM - len(suffix)].rstrip("._") + suffix
    if stem.split(".")[0].upper() in _WINDOWS_RESERVED:
        stem += "_"
    return stem


def _param_text(name: str, value) -> str:
    if isinstance(value, BlocksSpec | BlockVector):
        return f"{name}=blocks"
    return f"{name}{format_number(float(value))}"


def auto_name(root: Node, recipe_hash: str, variant: str | None = None) -> str:
    """`<A>_x_<B>[_x_<C>]_<method>_<param>-<shorthash>` without extension."""
    stems = [os.path.splitext(os.path.basename(ref.path))[0] for ref in walk_models(root)]
    names = stems[:3] if len(stems) <= 3 else stems[:2] + [f"+{len(stems) - 2}"]
    parts = ["_x_".join(names)]
    while isinstance(root, MergeNode) and root.method in POST_OPS:  # name the merge, not its post-op
        root = root.inputs[0]
    if isinstance(root, MergeNode):
        parts.append(_SHORT_METHOD.get(root.method, root.method))
        for key, letter in (("alpha", "a"), ("beta", "b")):
            if key in root.params:
                parts.append(_param_text(letter, root.params[key]))
        if root.method != "rebasin" and any(n.method == "rebasin" for n in walk_merges(root)):
            parts.append("rebasin")
    suffix = (f"-{variant}" if variant else "") + f"-{recipe_hash[:10]}"
    return _fit(sanitize("_".join(parts)), suffix)


def custom_file_name(name: str, file_format: str = "safetensors") -> str:
    """A user's name as a safe file name with the format's extension."""
    raw = name.strip()
    if not raw:
        raise UnsafeNameError("the file name is empty")
    if "/" in raw or "\\" in raw or ":" in raw or raw in (".", "..") or raw.startswith("."):
        raise UnsafeNameError(f"custom name must be a plain file name: {name!r}")
    ext = EXTENSIONS[file_format]
    stem, current = os.path.splitext(raw)
    if current.lower() not in EXTENSIONS.values():
        stem = raw
    stem = sanitize(stem)
    if not stem:
        raise UnsafeNameError(f"custom name has no usable characters: {name!r}")
    return _fit(stem, "") + ext
