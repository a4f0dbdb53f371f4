"""Limits on recipes, far above any real one, so hostile text costs neither time nor memory.

A real recipe is a few hundred bytes to a few kilobytes: a handful of assignments, merges nested
a few levels, at most 17 models per method. The limits below are hundreds of times that; they
keep the parser, the recursive walks over the merge tree and the engine's per-key trees bounded.
"""

from __future__ import annotations

from lib_merge.errors import RecipeSyntaxError

MAX_RECIPE_BYTES = 64 * 1024  # bytes of text (parsing that much takes well under a second)
MAX_STATEMENTS = 10_000  # assignments
MAX_SYNTAX_NODES = 200_000  # syntax elements in the whole text
MAX_NESTING = 50  # levels of calls and lists inside one statement
MAX_MERGES = 1_000  # merge steps, counting a step used twice twice (the tree the engine evaluates)
MAX_MERGE_DEPTH = 100  # merges inside merges
MAX_MODELS = 100  # distinct model files


def check_size(root) -> None:
    """Refuse a merge tree beyond the limits. Works on the shared graph (a name used twice is one
    node), so a recipe that doubles itself at every line is measured without being expanded."""
    from lib_merge.recipe.nodes import MergeNode, ModelRef

    size: dict[int, int] = {}  # merge steps in the expanded tree below a node
    depth: dict[int, int] = {}
    models: set[ModelRef] = set()
    stack: list[tuple[object, bool]] = [(root, False)]
    while stack:
        node, children_done = stack.pop()
        if not isinstance(node, MergeNode):
            if isinstance(node, ModelRef):
                models.add(node)
                if len(models) > MAX_MODELS:
                    raise RecipeSyntaxError(f"the recipe uses more than {MAX_MODELS} models")
            continue
        if id(node) in size:
            continue
        if not children_done:
            stack.append((node, True))
            stack.extend((child, False) for child in node.inputs if id(child) not in size)
            continue
        merges = [c for c in node.inputs if isinstance(c, MergeNode)]
        size[id(node)] = 1 + sum(size[id(c)] for c in merges)
        depth[id(node)] = 1 + max((depth[id(c)] for c in merges), default=0)
        if size[id(node)] > MAX_MERGES:
            raise RecipeSyntaxError(f"the recipe has more than {MAX_MERGES:,} merge steps")
        if depth[id(node)] > MAX_MERGE_DEPTH:
            raise RecipeSyntaxError(f"merges are nested more than {MAX_MERGE_DEPTH} deep")
