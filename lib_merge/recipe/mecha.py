"""Reading sd-mecha `.mecha` recipes, format version 0.1.0, for the common subset.

Each line produces one value that later lines reference as `&N`. Models, scalar and block
literals, and the merges Alloy has an equivalent for are mapped; anything else is refused with
the line number, so an imported recipe never means something other than the original.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from lib_merge.errors import MechaImportError
from lib_merge.recipe.elemental import parse_elemental
from lib_merge.recipe.nodes import BlocksSpec, MergeNode, ModelRef, Node
from lib_merge.recipe.vectors import format_number

SUPPORTED = ("weighted_sum, add_difference, subtract, n_average, slerp, ties_sum, ties_sum_with_dropout, "
             "ties_sum_extended, convert_*, fallback, cast")  # fmt: skip
CONFIGS = {"sd1-ldm": "sd1", "sdxl-sgm": "sdxl", "sd3-comfyui": "sd3", "flux-flux": "flux"}
BLOCK_CONFIGS = ("sd1-supermerger_blocks", "sdxl-supermerger_blocks")
_TOKEN = re.compile(r'"((?:[^"\\]|\\.)*)"|(\S+)')


@dataclass(frozen=True)
class _Delta:  # subtract(x, y), kept apart until we see what uses it
    x: Node
    y: Node


@dataclass(frozen=True)
class _TaskSum:  # ties_sum(...) over deltas of one base
    base: Node
    models: tuple[Node, ...]
    method: str
    params: dict


@dataclass
class MechaImport:
    root: Node
    notes: list[str]


def from_mecha(text: str) -> MechaImport:
    lines = text.splitlines()
    version = lines[0].strip() if lines else ""
    if version != "version 0.1.0":
        raise MechaImportError(f"unsupported .mecha version {version.removeprefix('version ')!r}; supported: 0.1.0")
    values: list[object] = []
    notes: list[str] = []
    for number, line in enumerate(lines[1:], 2):
        if not line.strip():
            continue
        words = [(q.replace('\\"', '"').replace("\\\\", "\\"), True) if q is not None or w is None else (w, False)
                 for q, w in (m.groups() for m in _TOKEN.finditer(line))]  # fmt: skip
        op, args, kwargs = words[0][0], [], {}
        for word, quoted in words[1:]:
            if not quoted and "=" in word:
                key, _, raw = word.partition("=")
                kwargs[key] = _value(raw.strip('"'), raw.startswith('"'), values, number)
            else:
                args.append(_value(word, quoted, values, number))
        values.append(_instruction(op, args, kwargs, number, notes))
    root = values[-1] if values else None
    if not isinstance(root, (ModelRef, MergeNode)):
        raise MechaImportError("the recipe's last line does not produce a model")
    return MechaImport(root, notes)


def _value(word: str, quoted: bool, values: list, number: int) -> object:
    if quoted:
        return word
    if word.startswith("&"):
        index = int(word[1:])
        if index >= len(values):
            raise MechaImportError(f"line {number}: {word} refers to a line that comes later")
        return values[index]
    if word in ("null", "true", "false"):
        return {"null": None, "true": True, "false": False}[word]
    try:
        return float(word) if any(c in word for c in ".eE") else int(word)
    except ValueError:
        return word


def _instruction(op: str, args: list, kwargs: dict, number: int, notes: list[str]) -> object:
    if op == "model":
        config = kwargs.get("model_config")
        if config not in CONFIGS:
            raise MechaImportError(f"line {number}: model_config {config!r} is not one of {', '.join(CONFIGS)}")
        return ModelRef(str(args[0]))
    if op == "dict":
        return dict(kwargs)
    if op == "literal":
        value, config = args[0], kwargs.get("model_config")
        if config == "singleton-mecha":
            return float(value["key"]) if isinstance(value, dict) else float(value)
        if config in BLOCK_CONFIGS:
            return _blocks(value, config, notes)
        raise MechaImportError(f"line {number}: literal with model_config {config!r} is not supported")
    if op == "merge":
        return _merge(str(args[0]), args[1:], kwargs, number, notes)
    raise MechaImportError(f"line {number}: instruction {op!r} is not supported")


def _blocks(values: dict, config: str, notes: list[str]) -> BlocksSpec:
    items = dict(values)
    text = " ".join(f"{k}={format_number(float(v))}" for k, v in items.items() if k != "BASE")
    spec = BlocksSpec(f"BASE={format_number(float(items.get('BASE', 0)))} {text}".strip())
    if config.startswith("sd1") and "BASE" in items:
        notes.append("block mapping differs from sd-mecha for time_embed (BASE vs IN00)")
    return spec


_MECHA_DTYPES = {
    "float16": "fp16",
    "bfloat16": "bf16",
    "float32": "fp32",
    "float8_e4m3fn": "fp8_e4m3fn",
    "float8_e5m2": "fp8_e5m2",
}


def _merge(name: str, args: list, kwargs: dict, number: int, notes: list[str]) -> object:
    if name.startswith("convert_"):
        return args[0]
    if name == "fallback":
        return args[0]
    if name == "cast":
        dtype = _MECHA_DTYPES.get(str(kwargs.get("dtype")))
        if dtype is None:
            notes.append(f"line {number}: cast to {kwargs.get('dtype')} left to the output dtype option")
            return args[0]
        return MergeNode("cast", (args[0],), {"dtype": dtype})
    if name == "subtract":
        return _Delta(args[0], args[1])
    if name == "weighted_sum":
        models, alpha = _models_and_ratio(name, args, kwargs, ("alpha",), number)
        return _with_time_embed("weighted_sum", models, alpha)
    if name == "slerp":
        models, t = _models_and_ratio(name, args, kwargs, ("t", "alpha"), number)
        return MergeNode("slerp", models, {"alpha": _scalar(t, number)})
    if name == "n_average":
        return MergeNode("n_average", tuple(args), {})
    if name in ("ties_sum", "ties_sum_with_dropout", "ties_sum_extended"):
        return _task_sum(name, args, kwargs, number)
    if name == "add_difference":
        base, delta, alpha = args
        if isinstance(delta, _Delta):
            return _with_time_embed("add_difference", (base, delta.x, delta.y), alpha)
        if isinstance(delta, _TaskSum) and delta.base == base:
            params = {"alpha": _scalar(alpha, number), **delta.params}
            return MergeNode(delta.method, (base, *delta.models), params)
        raise MechaImportError(f"line {number}: add_difference of this kind is not in the supported subset")
    raise MechaImportError(f'line {number}: method "{name}" is not in the supported subset ({SUPPORTED})')


def _with_time_embed(method: str, inputs: tuple, alpha) -> MergeNode:
    """sd-mecha counts time_embed in BASE, Alloy in IN00: an elemental rule keeps sd-mecha's numbers."""
    params: dict = {"alpha": alpha}
    if isinstance(alpha, BlocksSpec) and isinstance(alpha.spec, str) and alpha.spec.startswith("BASE="):
        base = alpha.spec.split()[0].split("=")[1]
        params["elemental"] = parse_elemental(f"IN00:time_embed:{base}")
    return MergeNode(method, inputs, params)


def _models_and_ratio(name: str, args: list, kwargs: dict, names: tuple[str, ...], number: int):
    """Two models and the ratio, given as a third argument or as a keyword (`t=0.3`)."""
    ratio = args[2] if len(args) > 2 else next((kwargs[n] for n in names if n in kwargs), None)
    if len(args) < 2 or ratio is None:
        raise MechaImportError(f"line {number}: {name} needs two models and {names[0]}")
    return (args[0], args[1]), ratio


def _scalar(value, number: int) -> float:
    if isinstance(value, (int, float)):
        return float(value)
    raise MechaImportError(f"line {number}: expected a number")


def _task_sum(name: str, args: list, kwargs: dict, number: int) -> _TaskSum:
    if not args or not all(isinstance(d, _Delta) for d in args) or len({id(d.y) for d in args}) != 1:
        raise MechaImportError(f"line {number}: {name} is supported over deltas of one base only")
    base = args[0].y
    models = tuple(d.x for d in args)
    sign = "count" if kwargs.get("vote_sgn") else "sum"
    if name == "ties_sum_extended" and any(k not in ("k", "vote_sgn") for k in kwargs):
        raise MechaImportError(f"line {number}: ties_sum_extended is supported with its default options only")
    if name != "ties_sum_with_dropout":
        return _TaskSum(base, models, "ties", {"density": float(kwargs.get("k", 0.2)), "sign": sign})
    params = {"p": float(kwargs.get("probability", 0.9)), "seed": float(kwargs.get("seed") or 0)}
    if kwargs.get("della_eps"):
        return _TaskSum(base, models, "della", {"density": 1 - params["p"], "epsilon": float(kwargs["della_eps"]),
                                                "seed": params["seed"], "elect": 1.0})  # fmt: skip
    return _TaskSum(base, models, "dare_ties", params | {"sign": sign})
