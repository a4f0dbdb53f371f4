"""Recipe nodes: an expression tree over models. Nodes never touch tensors."""

from __future__ import annotations

from dataclasses import dataclass, field

from lib_merge.recipe.vectors import BlockVector


@dataclass(frozen=True)
class ModelRef:
    """A model input: a path (or checkpoint title) and, when known, the file's sha256."""

    path: str
    sha256: str | None = None


@dataclass(frozen=True)
class BlocksSpec:
    """A block vector as written, resolved against a schema once the architecture is known."""

    spec: str | tuple[float, ...]
    preset: str | None = None  # the preset name when given by name
    default: float | None = None  # value of slots a named form leaves open (the scalar slider)


@dataclass(frozen=True)
class Param:
    """An open input of a template: a model, a sub-recipe or a number filled in later."""

    name: str


ParamValue = float | BlocksSpec | BlockVector | Param


@dataclass(frozen=True)
class MergeNode:
    method: str
    inputs: tuple[Node, ...]
    params: dict[str, ParamValue] = field(default_factory=dict, hash=False, compare=True)


Node = ModelRef | MergeNode | Param


def walk_models(node: Node) -> list[ModelRef]:
    """Models in order of first use, depth first, left to right (the A, B, C naming order)."""
    seen: list[ModelRef] = []

    def visit(n: Node) -> None:
        if isinstance(n, ModelRef):
            if n not in seen:
                seen.append(n)
        elif isinstance(n, MergeNode):
            for child in n.inputs:
                visit(child)

    visit(node)
    return seen


def walk_merges(node: Node) -> list[MergeNode]:
    """Merge nodes in evaluation order (children before parents), each once."""
    order: list[MergeNode] = []

    def visit(n: Node) -> None:
        if isinstance(n, MergeNode):
            for child in n.inputs:
                visit(child)
            if not any(n is o for o in order):
                order.append(n)

    visit(node)
    return order


def primary_model(node: Node) -> ModelRef:
    while isinstance(node, MergeNode):
        node = node.inputs[0]
    return node


def open_params(node: Node) -> list[str]:
    """Names of the template parameters still open, sorted."""
    found: set[str] = set()

    def visit(n: Node) -> None:
        if isinstance(n, Param):
            found.add(n.name)
        elif isinstance(n, MergeNode):
            found.update(v.name for v in n.params.values() if isinstance(v, Param))
            for child in n.inputs:
                visit(child)

    visit(node)
    return sorted(found)


def replace_models(node: Node, resolve) -> Node:
    """The same recipe with every model input passed through `resolve(ModelRef) -> ModelRef`."""
    if isinstance(node, Param):
        return node
    if isinstance(node, ModelRef):
        return resolve(node)
    return MergeNode(node.method, tuple(replace_models(i, resolve) for i in node.inputs), dict(node.params))
