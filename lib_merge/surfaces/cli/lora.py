"""`lora inspect` and `lora bake`: LoRA files on the command line, with `merge`'s output and error rules."""

from __future__ import annotations

import json
import os

from lib_merge.surfaces.cli.errors import UsageError
from lib_merge.surfaces.cli.merge import save_merge


def cmd_lora(args) -> int:
    return {"inspect": _inspect, "bake": _bake}[args.lora_command](args)


def _inspect(args) -> int:
    from dataclasses import asdict

    from lib_merge.lora.inspect import inspect_lora

    shapes, label = _model_shapes(args.model) if args.model else (None, None)
    report = inspect_lora(args.file, shapes, label)
    print(json.dumps(asdict(report), indent=1) if args.json else "\n".join(report.lines()))
    return 0


def _model_shapes(path: str) -> tuple[dict, str]:
    from lib_merge.io.source import SourceModel

    source = SourceModel(path)
    try:
        return source.shapes, source.name
    finally:
        source.close()


def _bake(args) -> int:
    """--model A and each --lora FILE:STRENGTH[:BLOCKS] as a recipe: lora(…lora(A, F1, s1)…, Fn, sn)."""
    from lib_merge.app.lora import lora_recipe, parse_lora_spec
    from lib_merge.io.source import file_schema
    from lib_merge.recipe.nodes import ModelRef

    if not args.output:
        raise UsageError("lora bake needs -o OUT")
    model = os.path.abspath(args.model) if os.path.exists(args.model) else args.model
    blocks = any(parse_lora_spec(line)[2] for line in args.lora)
    schema = file_schema(model) if blocks else None

    def resolve(path: str) -> str:  # CLI paths are relative to the working folder
        return os.path.abspath(path) if os.path.exists(path) else path

    root = lora_recipe(ModelRef(model), args.lora, resolve, schema.id if schema else None)
    return save_merge(root, None, args, loras=list(args.lora))
