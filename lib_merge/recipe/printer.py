"""The one canonical recipe printer and the recipe hash."""

from __future__ import annotations

import hashlib

from lib_merge.arch.blocks import SCHEMAS
from lib_merge.methods import METHODS, ParamSpec
from lib_merge.methods.adjust import AdjustValues
from lib_merge.recipe.nodes import BlocksSpec, MergeNode, ModelRef, Node, Param, walk_merges, walk_models
from lib_merge.recipe.parse import HEADER
from lib_merge.recipe.vectors import BlockVector, format_number, format_vector


def model_names(count: int) -> list[str]:
    letters = [chr(ord("A") + i) for i in range(26)]
    return [letters[i] if i < 26 else f"M{i + 1}" for i in range(count)]


def quote(text: str) -> str:
    return '"' + text.replace("\\", "\\\\").replace('"', '\\"') + '"'


def format_param(value: object, spec: ParamSpec | None = None) -> str:
    """A parameter value as a recipe writes it."""
    if isinstance(value, AdjustValues) or (spec is not None and spec.text):  # value objects that read as text
        return quote(value.text)
    if isinstance(value, Param):
        return f"param({quote(value.name)})"
    if isinstance(value, tuple):
        return "[" + ", ".join(format_number(v) for v in value) + "]"
    if spec is not None and spec.choices:
        return quote(str(value))
    if spec is not None and spec.boolean:
        return "True" if float(value) else "False"
    if spec is not None and spec.integer and isinstance(value, (int, float)):
        return str(int(value))
    if isinstance(value, BlockVector):
        return f"blocks({quote(format_vector(value, SCHEMAS[value.schema_id]))})"
    if isinstance(value, BlocksSpec):
        if value.preset:
            return f"preset({quote(value.preset)})"
        if isinstance(value.spec, str):
            text = value.spec
            named = "=" in text and not any(t.startswith("*=") for t in text.split())
            if named and value.default is not None:  # the scalar slider fills the blocks not named
                text = f"{text} *={format_number(value.default)}"
            return f"blocks({quote(text)})"
        return "blocks([" + ", ".join(format_number(v) for v in value.spec) + "])"
    return format_number(value)  # type: ignore[arg-type]


def _options(params: dict) -> list[str]:
    out = []
    rules = params.get("elemental")
    if rules is not None:
        out.append(f"elemental=elemental({quote(rules.text)}" + (f", seed={rules.seed})" if rules.seed else ")"))
    keys = params.get("filter")
    if keys is not None:
        targets = ", ".join(quote(t) for t in keys.targets)
        elements = ", ".join(quote(e) for e in keys.elements)
        inner = ", ".join(x for x in (targets, f"elements=[{elements}]" if elements else "") if x)
        out.append(f"filter={keys.mode}({inner})")
    return out


def strip_casts(node: Node) -> Node:
    """The recipe without its cast(...) nodes: a dtype hint is not part of the merge's identity."""
    if isinstance(node, MergeNode):
        if node.method == "cast":
            return strip_casts(node.inputs[0])
        return MergeNode(node.method, tuple(strip_casts(i) for i in node.inputs), node.params)
    return node


def cast_dtype(root: Node) -> str | None:
    """The dtype of an outermost cast(x, dtype=…), if the recipe ends in one."""
    if isinstance(root, MergeNode) and root.method == "cast":
        return str(root.params.get("dtype", "fp16"))
    return None


def print_recipe(root: Node, identity: bool = False) -> str:
    """Canonical text; with `identity`, model lines carry only their sha256 and casts are left out (for the hash)."""
    if identity:
        root = strip_casts(root)
    models = walk_models(root)
    names: dict[int, str] = {}
    lines = [HEADER]
    for ref, name in zip(models, model_names(len(models))):
        names[id(ref)] = name
        if identity:
            args = f"sha256={quote(ref.sha256 or '')}"
        else:
            args = quote(ref.path) + (f", sha256={quote(ref.sha256)}" if ref.sha256 else "")
        lines.append(f"{name} = model({args})")
    merges = walk_merges(root)
    for i, node in enumerate(merges, 1):
        names[id(node)] = "merged" if node is root else f"m{i}"

    def ref_name(n: Node) -> str:
        if isinstance(n, Param):
            return f"param({quote(n.name)})"
        if isinstance(n, ModelRef):
            return names[id(next(m for m in models if m == n))]
        return names[id(n)]

    for node in merges:
        spec = METHODS[node.method]
        plain = len(node.inputs) - len(spec.references)
        args = [ref_name(n) for n in node.inputs[:plain]]
        args += [f"{name}={ref_name(n)}" for name, n in zip(spec.references, node.inputs[plain:])]
        texts = [node.params.get(p.name, p.default) for p in spec.params if p.text]
        args += [quote(getattr(v, "identity_text", v.text) if identity else v.text) for v in texts]
        args += [f"{p.name}={format_param(node.params.get(p.name, p.default), p)}" for p in spec.params if not p.text]
        args += _options(node.params)
        lines.append(f"{names[id(node)]} = {node.method}({', '.join(args)})")
    if isinstance(root, ModelRef):
        lines.append(f"merged = {ref_name(root)}")
    return "\n".join(lines) + "\n"


def recipe_hash(root: Node) -> str:
    """sha256 of the identity text: equal inputs and settings give equal hashes anywhere."""
    missing = [m.path for m in walk_models(root) if not m.sha256]
    if missing:
        raise ValueError(f"recipe hash needs the sha256 of every model; missing for {', '.join(missing)}")
    return hashlib.sha256(print_recipe(root, identity=True).encode("utf-8")).hexdigest()
