"""`lora inspect` and `lora bake`: LoRA files on the command line, with `merge`'s output and error rules."""

from __future__ import annotations

import json
import os
import sys

from lib_merge.surfaces.cli.common import count_progress
from lib_merge.surfaces.cli.errors import UsageError
from lib_merge.surfaces.cli.merge import save_merge


def cmd_lora(args) -> int:
    return {"inspect": _inspect, "bake": _bake, "merge": _merge, "extract": _extract}[args.lora_command](args)


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
    from lib_merge.lora.blocks import load_lora_presets
    from lib_merge.recipe.nodes import ModelRef

    if not args.output:
        raise UsageError("lora bake needs -o OUT")
    model = os.path.abspath(args.model) if os.path.exists(args.model) else args.model
    blocks = any(parse_lora_spec(line)[2] for line in args.lora)
    schema = file_schema(model) if blocks else None

    def resolve(path: str) -> str:  # CLI paths are relative to the working folder
        return os.path.abspath(path) if os.path.exists(path) else path

    root = lora_recipe(ModelRef(model), args.lora, resolve, schema.id if schema else None, load_lora_presets())
    return save_merge(root, None, args, loras=list(args.lora))


def _given(args, *names: str) -> dict:
    """The flags given on the command line: the request's own defaults fill the rest."""
    return {name: getattr(args, name) for name in names if getattr(args, name, None) is not None}


def _merge(args) -> int:
    """--lora FILE:STRENGTH[:BLOCKS] … --method concat|svd → one LoRA at -o OUT, with the settings the
    LoRA tab and the HTTP route merge with."""
    from lib_merge.app.lora import merge_settings, parse_lora_spec
    from lib_merge.app.requests import LoraMergeRequest
    from lib_merge.lora.blocks import load_lora_presets
    from lib_merge.lora.merge import merge_loras

    _check_output(args, [parse_lora_spec(line)[0] for line in args.lora] + ([args.model] if args.model else []))
    flags = _given(args, "method", "rank", "energy", "clamp", "max_rank", "full_svd", "seed", "dtype", "overwrite")
    request = LoraMergeRequest(list(args.lora), **flags)
    if request.method == "concat" and (args.rank or args.energy):
        raise UsageError("--rank and --energy are for --method svd (concat keeps every rank)")
    settings = merge_settings(request, str, args.model, load_lora_presets(), model_if_same_base=False)
    return _write(merge_loras(settings, progress=_progress(args, "merging")), request.dtype, args)


def _extract(args) -> int:
    """ΔW = alpha·A − beta·B per module, factorised → a LoRA at -o OUT, with the LoRA tab's settings."""
    from lib_merge.app.lora import extract_settings
    from lib_merge.app.requests import LoraExtractRequest
    from lib_merge.lora.extract import extract_lora

    _check_output(args, [args.a, args.b])
    if args.conv_rank is not None and args.conv_rank < 0:
        raise UsageError("--conv-rank must be 0 (no convolutions) or more")
    names = ("rank", "conv_rank", "full_svd", "dtype", "overwrite", "energy", "ratio", "max_rank", "alpha", "beta",
             "network_alpha", "te_threshold", "clamp", "seed")  # fmt: skip
    request = LoraExtractRequest(args.a, args.b, **_given(args, *names))
    settings = extract_settings(request, str, args.device)
    return _write(extract_lora(settings, progress=_progress(args, "extracting")), request.dtype, args)


def _check_output(args, sources: list[str]) -> None:
    """Before the work: an output is given, its folder exists, it is no input, and it is new unless --overwrite."""
    from lib_merge.io.tempfiles import check_new_output

    if not args.output:
        raise UsageError(f"lora {args.lora_command} needs -o OUT")
    check_new_output(args.output, sources, args.overwrite, writes="safetensors")


def _write(build, dtype: str, args) -> int:
    """The LoRA's notes, then its recipe hash and path (the output lines of every command that writes)."""
    from lib_merge.app.lora import write_new_lora

    written = write_new_lora(build, args.output, dtype, args.overwrite)
    if not args.quiet:
        meta = written.metadata
        for note in [*build.notes, f"{written.modules} modules, rank {meta['ss_network_dim']}, "
                     f"alpha {meta['ss_network_alpha']}"]:  # fmt: skip
            print(f"note: {note}", file=sys.stderr)
    print(written.recipe_hash)
    print(written.path)
    return 0


def _progress(args, label: str):
    return count_progress(args, label, "module")
