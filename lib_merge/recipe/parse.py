"""Parsing recipe text with ``ast`` (never eval): only a small, declared subset is accepted.

Hostile text meets limits before it can cost time or memory (see `limits`), so parsing raises
nothing but RecipeError, whatever the input.
"""

from __future__ import annotations

import ast
import math
import os
import re

from lib_merge.errors import RecipeError, RecipeSyntaxError, RecipeTypeError
from lib_merge.methods import METHODS, MethodSpec, model_limit
from lib_merge.recipe.elemental import Elemental, parse_elemental
from lib_merge.recipe.filters import KeyFilter
from lib_merge.recipe.limits import MAX_NESTING, MAX_RECIPE_BYTES, MAX_STATEMENTS, MAX_SYNTAX_NODES, check_size
from lib_merge.recipe.nodes import BlocksSpec, MergeNode, ModelRef, Node, Param
from lib_merge.recipe.params import method_params

HEADER = "alloy-recipe 1"
_FORBIDDEN = re.compile("[\x00\ud800-\udfff]")  # NUL and lone surrogates (not text)

_OPERATOR_NAMES = {
    ast.BinOp: "operator",
    ast.Attribute: "attribute access",
    ast.Subscript: "subscript",
    ast.Lambda: "lambda",
    ast.JoinedStr: "f-string",
    ast.ListComp: "comprehension",
    ast.GeneratorExp: "comprehension",
    ast.DictComp: "comprehension",
    ast.SetComp: "comprehension",
    ast.Dict: "dict literal",
    ast.Compare: "comparison",
    ast.BoolOp: "boolean operator",
}
_BINOP_SYMBOLS = {
    ast.Add: "+",
    ast.Sub: "-",
    ast.Mult: "*",
    ast.Div: "/",
    ast.Pow: "**",
    ast.FloorDiv: "//",
    ast.Mod: "%",
    ast.MatMult: "@",
}


def read_recipe_file(path: str) -> str:
    """A recipe file's text: size checked before reading, UTF-8 checked with the line named."""
    try:
        size = os.path.getsize(path)
        if size > MAX_RECIPE_BYTES:
            raise RecipeSyntaxError(f"{path}: {size:,} bytes; a recipe may have at most {MAX_RECIPE_BYTES:,}")
        with open(path, "rb") as f:
            raw = f.read(MAX_RECIPE_BYTES + 1)
    except OSError as e:
        raise RecipeError(f"cannot read recipe {path}: {e.strerror or e}") from None
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError as e:
        line = raw[: e.start].count(b"\n") + 1
        col = e.start - (raw.rfind(b"\n", 0, e.start) + 1) + 1
        raise RecipeSyntaxError(f"{path} line {line}, col {col}: not UTF-8 text (byte 0x{raw[e.start]:02x})") from None


def parse_recipe(text: str) -> Node:
    """Parse recipe text into its result node; errors carry line and column."""
    if not isinstance(text, str):
        raise RecipeSyntaxError("a recipe is text")
    if len(text) > MAX_RECIPE_BYTES or len(text.encode("utf-8", "surrogatepass")) > MAX_RECIPE_BYTES:
        raise RecipeSyntaxError(f"the recipe is longer than {MAX_RECIPE_BYTES:,} bytes")
    lines = text.splitlines()
    if not lines or lines[0].strip() != HEADER:
        raise RecipeSyntaxError(f"line 1: a recipe starts with the line '{HEADER}'")
    tree = _syntax_tree("\n" + "\n".join(lines[1:]))  # the blank first line keeps the file's line numbers
    names: dict[str, object] = {}
    result = None
    for stmt in tree.body:
        if not isinstance(stmt, ast.Assign) or len(stmt.targets) != 1 or not isinstance(stmt.targets[0], ast.Name):
            raise _error(stmt, "only assignments 'name = expression' are allowed in recipes")
        name = stmt.targets[0].id
        if name in names:
            raise _error(stmt, f"name '{name}' is assigned twice")
        names[name] = result = _Evaluator(names).value(stmt.value)
    if result is None:
        raise RecipeSyntaxError("the recipe has no assignment; the last assignment is the result")
    if not isinstance(result, (MergeNode, ModelRef)):
        raise RecipeTypeError("the last assignment of a recipe must be a model or a merge")
    check_size(result)
    return result


def _syntax_tree(body: str) -> ast.Module:
    """`ast.parse` within the limits; a parser that runs out of stack or memory is a recipe error too."""
    bad = _FORBIDDEN.search(body)
    if bad is not None:
        line = body.count("\n", 0, bad.start()) + 1
        raise RecipeSyntaxError(f"line {line}: character U+{ord(bad.group()):04X} is not allowed in recipes")
    try:
        tree = ast.parse(body, mode="exec")
    except SyntaxError as e:
        raise RecipeSyntaxError(f"line {e.lineno}, col {e.offset}: {e.msg}") from None
    except (RecursionError, MemoryError):
        raise RecipeSyntaxError(f"the recipe is nested too deeply (at most {MAX_NESTING} levels)") from None
    except ValueError as e:  # e.g. a NUL byte on older Pythons
        raise RecipeSyntaxError(f"not a recipe: {e}") from None
    if len(tree.body) > MAX_STATEMENTS:
        raise RecipeSyntaxError(f"{len(tree.body):,} statements; a recipe may have at most {MAX_STATEMENTS:,}")
    count = 0
    stack = [(stmt, 1) for stmt in tree.body]
    while stack:
        node, depth = stack.pop()
        count += 1
        if count > MAX_SYNTAX_NODES:
            raise RecipeSyntaxError(f"the recipe has more than {MAX_SYNTAX_NODES:,} syntax elements")
        if depth > MAX_NESTING:
            raise _error(node, f"nested too deeply (at most {MAX_NESTING} levels)")
        stack.extend((child, depth + 1) for child in ast.iter_child_nodes(node))
    return tree


def _finite(value: int | float) -> bool:
    try:
        return math.isfinite(value)
    except OverflowError:  # an integer too large for a float
        return False


def _short(node: ast.Constant) -> str:
    text = repr(node.value)
    return text if len(text) <= 24 else text[:20] + "…"


def _error(node: ast.AST, message: str) -> RecipeSyntaxError:
    col = getattr(node, "col_offset", 0) + 1
    return RecipeSyntaxError(f"line {getattr(node, 'lineno', '?')}, col {col}: {message}")


class _Evaluator:
    def __init__(self, names: dict[str, object]):
        self.names = names

    def value(self, node: ast.AST) -> object:
        if isinstance(node, ast.Constant) and isinstance(node.value, (int, float, str, bool, type(None))):
            if type(node.value) in (int, float) and not _finite(node.value):
                raise _error(node, f"{_short(node)} is not a finite number")
            return node.value
        if isinstance(node, ast.UnaryOp) and isinstance(node.op, (ast.USub, ast.UAdd)):
            operand = node.operand
            if isinstance(operand, ast.Constant) and type(operand.value) in (int, float):
                return -operand.value if isinstance(node.op, ast.USub) else operand.value
            raise _error(node, "a sign is allowed only in front of a number")
        if isinstance(node, ast.Name):
            if node.id not in self.names:
                raise _error(node, f"name '{node.id}' is used before it is assigned")
            return self.names[node.id]
        if isinstance(node, (ast.List, ast.Tuple)):
            return [self.value(e) for e in node.elts]
        if isinstance(node, ast.Call):
            return self.call(node)
        if isinstance(node, ast.BinOp):
            raise _error(node, f"operator '{_BINOP_SYMBOLS.get(type(node.op), '?')}' is not allowed in recipes")
        what = _OPERATOR_NAMES.get(type(node), type(node).__name__)
        raise _error(node, f"{what} is not allowed in recipes")

    def call(self, node: ast.Call) -> object:
        if not isinstance(node.func, ast.Name):
            raise _error(node, "only calls of recipe functions by name are allowed")
        func = node.func.id
        if any(kw.arg is None for kw in node.keywords):
            raise _error(node, "'**' arguments are not allowed in recipes")
        if any(isinstance(a, ast.Starred) for a in node.args):
            raise _error(node, "'*' arguments are not allowed in recipes")
        args = [self.value(a) for a in node.args]
        kwargs = {kw.arg: self.value(kw.value) for kw in node.keywords}
        try:
            if func == "model":
                return _model(*args, **kwargs)
            if func == "blocks":
                return _blocks(*args, **kwargs)
            if func == "preset":
                return _preset(*args, **kwargs)
            if func == "param":
                return _param(*args, **kwargs)
            if func == "elemental":
                return _elemental(*args, **kwargs)
            if func in ("include", "exclude"):
                return _filter(func, *args, **kwargs)
            if func in METHODS:
                return _merge(METHODS[func], args, kwargs)
        except TypeError as e:
            raise RecipeTypeError(f"line {node.lineno}: {func}(): {e}") from None
        except RecipeTypeError as e:
            raise RecipeTypeError(f"line {node.lineno}: {e}") from None
        raise _error(node, f"unknown function '{func}'")


def _model(path, sha256=None) -> ModelRef:
    if not isinstance(path, str) or not path:
        raise RecipeTypeError("model(): the path must be a non-empty string")
    if sha256 is not None and not (isinstance(sha256, str) and len(sha256) == 64):
        raise RecipeTypeError("model(): sha256 must be 64 hex digits")
    return ModelRef(path, sha256.lower() if sha256 else None)


def _blocks(spec) -> BlocksSpec:
    if isinstance(spec, str):
        return BlocksSpec(spec)
    if isinstance(spec, list) and all(type(v) in (int, float) for v in spec):
        return BlocksSpec(tuple(float(v) for v in spec))
    raise RecipeTypeError("blocks(): give a named form string or a list of numbers")


def _preset(name) -> BlocksSpec:
    if not isinstance(name, str):
        raise RecipeTypeError("preset(): the name must be a string")
    return BlocksSpec(name, preset=name)


OPTIONS = ("elemental", "filter")  # keywords every merge method takes besides its parameters


def _merge(spec: MethodSpec, args: list, kwargs: dict) -> MergeNode:
    text_params = [p for p in spec.params if p.text]
    if text_params and len(args) == len(spec.inputs) + 1 and isinstance(args[-1], str):
        kwargs = {**kwargs, text_params[0].name: args.pop()}
    options = {k: kwargs.pop(k) for k in OPTIONS if k in kwargs}
    args = args + [kwargs.pop(name) for name in spec.references if name in kwargs]  # ref=A: a model by keyword
    if "elemental" in options and not isinstance(options["elemental"], Elemental):
        raise RecipeTypeError(f'{spec.name}(): elemental= takes elemental("...")')
    if "filter" in options and not isinstance(options["filter"], KeyFilter):
        raise RecipeTypeError(f"{spec.name}(): filter= takes include(...) or exclude(...)")
    if spec.variadic:
        if not len(spec.inputs) <= len(args) <= spec.max_models:
            raise RecipeTypeError(
                f"{spec.name}() takes {len(spec.inputs)} to {spec.max_models} models, got {len(args)}"
                + (f": {model_limit(spec)}" if len(args) > spec.max_models else "")
            )
    elif len(args) != len(spec.inputs):
        named = f" (the last as {', '.join(r + '=' for r in spec.references)})" if spec.references else ""
        raise RecipeTypeError(f"{spec.name}() takes {len(spec.inputs)} models{named}, got {len(args)}")
    for i, a in enumerate(args):
        if not isinstance(a, (ModelRef, MergeNode, Param)):
            raise RecipeTypeError(f"{spec.name}() argument {i + 1} must be a model, got {a!r}")
    params = method_params(spec, kwargs, len(args))
    params.update(options)
    return MergeNode(spec.name, tuple(args), params)


def _param(name) -> Param:
    if not isinstance(name, str) or not name.isidentifier():
        raise RecipeTypeError("param(): the name must be a plain word")
    return Param(name)


def _elemental(text, seed=0) -> Elemental:
    if not isinstance(text, str) or type(seed) is not int:
        raise RecipeTypeError("elemental(): give the rules as a string (and seed= as a whole number)")
    return parse_elemental(text, seed)


def _filter(mode: str, *targets, elements=()) -> KeyFilter:
    if not all(isinstance(t, str) for t in targets) or not all(isinstance(e, str) for e in elements):
        raise RecipeTypeError(f"{mode}(): targets and elements are strings")
    return KeyFilter(mode, tuple(targets), tuple(elements))
