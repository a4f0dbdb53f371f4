"""The commands besides `merge`: methods, recipe, history, clean, inspect, info, synth, ui, xyz."""

from __future__ import annotations

import json
import os
import sys

from lib_merge.surfaces.cli.common import canonical, check_new_output, load_recipe, warn
from lib_merge.surfaces.cli.errors import Terminated, UsageError


def cmd_methods(args) -> int:
    from lib_merge.methods import METHODS
    from lib_merge.recipe.form import CALC_MODES
    from lib_merge.recipe.printer import format_param

    print("methods (recipe functions):")
    for spec in METHODS.values():
        inputs = ", ".join(spec.inputs) + (", …" if spec.variadic else "")
        texts = [f'"{p.name.upper()}"' for p in spec.params if p.text]  # positional text after the models
        params = ", ".join(texts + [f"{p.name}={format_param(p.default, p)}" for p in spec.params if not p.text])
        print(f"  {spec.name}({inputs}{', ' if params else ''}{params})  [{spec.label}]")
    print("calc modes (--calc), with the modes they work with:")
    for calc, (modes, method, _) in CALC_MODES.items():
        print(f"  {calc}: {', '.join(modes)}" + (f" -> {method}" if method else ""))
    return 0


def cmd_recipe(args) -> int:
    if args.action in ("compose", "from-mecha"):
        from lib_merge.recipe import print_recipe

        if args.action == "compose":
            from lib_merge.recipe.compose import compose

            text = print_recipe(compose(load_recipe(args.file), dict(args.params)))
        else:
            from lib_merge.recipe import read_recipe_file
            from lib_merge.recipe.mecha import from_mecha

            imported = from_mecha(read_recipe_file(args.file))
            for note in imported.notes:
                print(f"note: {note}", file=sys.stderr)
            text = print_recipe(imported.root)
        if args.output:
            from lib_merge.io.tempfiles import write_text

            check_new_output(args.output, args.overwrite)
            write_text(args.output, text, args.overwrite)
            print(args.output)
        else:
            print(text, end="")
        return 0
    template = load_recipe(args.file)
    from lib_merge.recipe.nodes import open_params

    if args.action == "print" and open_params(template):
        from lib_merge.recipe import print_recipe

        print(print_recipe(template), end="")  # a template prints with its param(...) calls
        return 0
    hashed = canonical(template, args.models_dir)
    print(hashed.text if args.action == "print" else hashed.digest, end="" if args.action == "print" else "\n")
    return 0


def cmd_history(args) -> int:
    from pathlib import Path

    from lib_merge.app.history import find_row, read_history, search_history
    from lib_merge.errors import ModelNotFoundError

    if args.history_command == "import-supermerger":
        from lib_merge.app.history import import_supermerger

        count, skipped = import_supermerger(Path(args.file), warn=warn)
        for line in skipped:
            warn(line)
        print(f"imported {count} rows")
        return 0
    if args.file and not Path(args.file).is_file():
        raise ModelNotFoundError(f"no history file at {args.file}")
    log = read_history(Path(args.file) if args.file else None)
    for line in log.skipped:
        warn(line)
    if args.history_command == "show":
        row = find_row(log.rows, args.id)
        print(
            f"id {row.id}  {row.time}  {row.name}\nrecipe hash: {row.recipe_hash}\nmodels: {row.models}\n"
            f"output: {row.output}\nsettings: {json.dumps(row.settings, indent=1, sort_keys=True)}\n"
        )
        print(row.recipe, end="")
        return 0
    rows = (
        search_history(log.rows, " ".join(args.words), args.any_word)
        if args.history_command == "search"
        else log.rows[-args.limit :]
        if args.limit > 0
        else log.rows
    )
    for row in rows:
        print(f"{row.id:>5}  {row.time}  {row.recipe_hash[:10]}  {row.name}  {row.models}  -> {row.output}")
    return 0


def cmd_clean(args) -> int:
    """Remove stale temporary files in the folder (and below it) and in the user-data folder, and log
    the history rows of merges that were killed between saving and logging."""
    from lib_merge.app.history import recover_history
    from lib_merge.io.tempfiles import clean_stale
    from lib_merge.paths import user_data_dir

    folder = args.folder or args.models_dir or os.environ.get("ALLOY_MODELS_DIR") or "."
    if not os.path.isdir(folder):
        raise UsageError(f"{folder} is not a folder")
    for where in dict.fromkeys([os.path.abspath(folder), str(user_data_dir())]):
        report = clean_stale(where, recursive=True)
        for path in report.failed:
            warn(f"could not remove {path}")
        if not args.quiet:
            for path in report.removed:
                print(f"removed {path}")
        print(report.text(where))
    recovered = recover_history(warn=warn)
    if recovered:
        print(f"logged {recovered} history row{'s' if recovered != 1 else ''} of merges killed before logging")
    return 0


def cmd_inspect(args) -> int:
    from lib_merge.toolkit.inspect import format_full_report, full_report

    report = full_report(args.file, args.fingerprint)
    print(json.dumps(report, indent=1) if args.json else format_full_report(report))
    return 0


def cmd_info(args) -> int:
    from lib_merge.arch.registry import ARCHITECTURES
    from lib_merge.io.report import describe_architectures, describe_schema, format_inspect, inspect_model

    if not args.target:
        print(describe_architectures())
    elif args.target in ARCHITECTURES:
        print(describe_schema(args.target, args.verbose))
    elif os.path.exists(args.target):
        print(format_inspect(inspect_model(args.target)))
    else:
        raise UsageError(f"{args.target!r} is neither an architecture ({', '.join(ARCHITECTURES)}) nor a file")
    return 0


def cmd_synth(args) -> int:
    from lib_merge.arch.layouts import LAYOUT_FAMILIES, SINGLE_FILE
    from lib_merge.arch.registry import ARCHITECTURES
    from lib_merge.io.dtypes import parse_output_dtype
    from lib_merge.io.synth import SynthSpec, write_synthetic

    check_new_output(args.output, args.overwrite, writes="safetensors")
    if args.scale < 1:
        raise UsageError("--scale must be at least 1")
    arch = ARCHITECTURES[args.arch]
    if args.variant and args.variant not in arch.named_variants:
        raise UsageError(
            f"{arch.label} has no variant {args.variant!r}; named: {', '.join(arch.named_variants) or 'none'}"
        )
    if args.layout not in LAYOUT_FAMILIES.get(args.arch, (SINGLE_FILE,)):
        raise UsageError(f"--layout {args.layout} is not one Alloy writes for {arch.label}")
    components = tuple(c.strip() for c in args.components.split(",")) if args.components else None
    unknown = [c for c in components or () if c not in arch.components]
    if unknown:
        raise UsageError(f"{arch.label} has no component {unknown[0]!r}; valid: {', '.join(arch.components)}")
    spec = SynthSpec(
        args.arch,
        args.scale,
        parse_output_dtype(args.dtype),
        args.seed,
        args.channels,
        components=components,
        variant=args.variant,
        layout=args.layout,
    )
    print(write_synthetic(args.output, spec, overwrite=args.overwrite))
    return 0


def cmd_ui(args) -> int:
    try:
        from lib_merge.surfaces.standalone import serve
    except ImportError as e:
        raise UsageError(f"the UI needs gradio: pip install gradio ({e})") from None
    from lib_merge.surfaces.standalone import ServeOptions, parse_auth

    auth = parse_auth(args.auth) if args.auth else None
    options = ServeOptions(args.host, args.port, auth, args.insecure, device=args.device)
    try:
        serve(args.models_dir or os.environ.get("ALLOY_MODELS_DIR") or ".", options)
    except (KeyboardInterrupt, Terminated):  # the server hands its stop signal back when it has stopped
        pass
    print("Alloy stopped", flush=True)
    return 0


def cmd_xyz(args) -> int:
    import json

    from lib_merge.app.plots.executor import idle_axes, merge_groups
    from lib_merge.app.plots.plan import PlanContext, XYZPlan, expand, split_plan
    from lib_merge.arch.blocks import SCHEMAS
    from lib_merge.io.source import file_schema

    try:
        with open(args.plan, encoding="utf-8") as f:
            data = json.load(f)
    except OSError as e:
        raise UsageError(f"cannot read plan {args.plan}: {e.strerror}") from None
    except (ValueError, RecursionError) as e:
        raise UsageError(f"{args.plan}: not JSON ({str(e) or 'nested too deeply'})") from None
    plans = split_plan(XYZPlan.from_dict(data))
    schema = SCHEMAS.get(args.schema or "") if args.schema else None
    if args.schema and schema is None:
        raise UsageError(f"unknown schema {args.schema!r}; known: {', '.join(SCHEMAS)}")
    if schema is None:
        a = plans[0].merge.get("a")
        path = os.path.join(args.models_dir or "", a) if a else None
        schema = (file_schema(path) if path and os.path.isfile(path) else None) or SCHEMAS["sd1"]
    total_cells = total_merges = 0
    for number, plan in enumerate(plans, 1):
        cells = expand(plan, PlanContext(schema))
        for warning in idle_axes(plan, cells):
            warn(warning)
        groups = merge_groups(cells)
        merge_of = {i: n for n, group in enumerate(groups, 1) for i in group}
        if len(plans) > 1:
            print(f"plot {number}/{len(plans)}")
        for i, cell in enumerate(cells):
            labels = "  ".join(
                f"{axis}={label}" for axis, label in zip("xyz", cell.labels, strict=True) if label
            ).replace("\n", " ")
            print(f"cell {i + 1}/{len(cells)}  {labels}  seed={cell.gen.seed}  merge {merge_of[i]}/{len(groups)}")
        total_cells += len(cells)
        total_merges += len(groups)
    print(f"{total_cells} cells, {total_merges} merges, schema {schema.id}")
    return 0
