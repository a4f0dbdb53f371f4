"""The command line: `python -m lib_merge COMMAND` (SPEC §18).

Every failure a person can fix prints one line starting with `error:` and exits with the
code of SPEC §18.9; the last stdout line of a successful merge is the output path alone.
"""

from __future__ import annotations

import argparse
import json
import os
import sys

from lib_merge.errors import AlloyError

EXIT_USAGE = 2


class UsageError(Exception):
    pass


class _Parser(argparse.ArgumentParser):
    def error(self, message: str):  # one clear line, exit code 2
        raise UsageError(message)


def build_parser() -> argparse.ArgumentParser:
    p = _Parser(prog="python -m lib_merge", description="Alloy: streaming model merges for Stable Diffusion")
    p.add_argument("--models-dir", help="folder that relative model paths in recipes resolve against")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.add_argument("--quiet", action="store_true")
    sub = p.add_subparsers(dest="command", required=True, parser_class=_Parser)

    m = sub.add_parser("merge", help="merge models (from a recipe file or from flags) into a file")
    m.add_argument("recipe", nargs="?", help="recipe file (.alloy)")
    m.add_argument("--a", help="model A (primary)")
    m.add_argument("--b", help="model B")
    m.add_argument("--c", help="model C")
    m.add_argument("--mode", help="weighted_sum | add_difference | triple_sum | sum_twice (ws, add, triple, twice)")
    m.add_argument("--alpha", type=float)
    m.add_argument("--beta", type=float)
    m.add_argument(
        "--calc",
        default="normal",
        help="calc mode: normal, trainDifference, smoothAdd, smoothAddMT, extract, tensor, tensor2, self, random",
    )
    m.add_argument("--gamma", type=float, help="gamma (extract)")
    m.add_argument("--seed", type=int, help="seed of random calc modes")
    m.add_argument("--elemental", help='elemental rules, "Blocks:Elements:Ratio, …"')
    m.add_argument("--include", help='merge only these: blocks, VAE, Adjust, key substrings ("OUT03 attn2")')
    m.add_argument("--exclude", help="merge all but these (same words as --include)")
    m.add_argument("--adjust", help='"IN,OUT,OUT2,CONT,BRI,COL1,COL2,COL3" after the merge')
    m.add_argument("--models", nargs="+", help="further models of a modern or N-model method (--a is the base)")
    m.add_argument(
        "--method",
        help="ties, dare, dare_ties, della, slerp, geometric_median, model_stock, "
        "add_perpendicular, n_average, task_arithmetic",
    )
    m.add_argument("--density", type=float)
    m.add_argument("--p", type=float, help="drop probability (DARE)")
    m.add_argument("--epsilon", type=float, help="DELLA's spread of keep probabilities")
    m.add_argument("--blocks", help='alpha as a block vector: "IN00=0.3 OUT05-OUT11=1 *=0.5" or 26/20 values')
    m.add_argument("--preset", help="alpha as a block-weight preset name")
    m.add_argument("--dtype", choices=["fp16", "bf16", "fp32"], help="default: a recipe's cast(…), else fp16")
    m.add_argument("--device", default="cpu")
    m.add_argument("--threads", type=int)
    m.add_argument("-o", "--output", help="output .safetensors file")
    m.add_argument("--overwrite", action="store_true", help="replace an existing output file")
    m.add_argument("--no-prune", action="store_true", help="keep EMA, schedule buffers and extra keys of A")
    m.add_argument("--no-metadata", action="store_true")
    m.add_argument("--format", default="safetensors", choices=["safetensors", "ckpt"])
    m.add_argument("--nonfinite", default="error", choices=["error", "keep_a", "ignore"])
    m.add_argument("--print-recipe", action="store_true", help="print the canonical recipe and exit")
    m.add_argument(
        "--print-changes",
        action="store_true",
        help="list every key whose alpha an elemental entry overrides (key  slot  old → new  (entry n))",
    )
    m.add_argument("--changes-csv", metavar="FILE", help="write that list as CSV")

    m.add_argument("--no-history", action="store_true", help="do not log this merge in history.csv")

    h = sub.add_parser("history", help="the merge history: list, search, show")
    hsub = h.add_subparsers(dest="history_command", required=True, parser_class=_Parser)
    hl = hsub.add_parser("list", help="the newest rows")
    hl.add_argument("--limit", type=int, default=20)
    hs = hsub.add_parser("search", help="rows containing all the words (or any, with --or)")
    hs.add_argument("words", nargs="+")
    hs.add_argument("--or", dest="any_word", action="store_true")
    hw = hsub.add_parser("show", help="one row with its settings and recipe (-1 = the last)")
    hw.add_argument("id", type=int)
    hi = hsub.add_parser("import-supermerger", help="append SuperMerger's mergehistory.csv to the history")
    hi.add_argument("file")

    r = sub.add_parser("recipe", help="print, hash or compose a recipe")
    r.add_argument("action", choices=["print", "hash", "compose", "from-mecha"])
    r.add_argument("file")
    r.add_argument(
        "-p",
        dest="params",
        nargs=2,
        action="append",
        metavar=("NAME", "VALUE"),
        default=[],
        help="compose: fill the template parameter NAME with a number, model or recipe file",
    )
    r.add_argument("-o", "--output", help="compose: write the recipe here instead of printing it")

    i = sub.add_parser("inspect", help="architecture, components, keys, dtypes and size of a checkpoint")
    i.add_argument("file")
    i.add_argument("--json", action="store_true")

    n = sub.add_parser("info", help="architectures and block schemas; or detection results for a file")
    n.add_argument("target", nargs="?", help="an architecture id or a checkpoint file")
    n.add_argument("-v", "--verbose", action="store_true", help="list the keys of every block")
    sub.add_parser("methods", help="every merge method and calc mode with its inputs and parameters")

    u = sub.add_parser("ui", help="the Alloy tabs in a browser, without the WebUI (merges go to files)")
    u.add_argument("--host", default="127.0.0.1")
    u.add_argument("--port", type=int, default=7870)

    x = sub.add_parser("xyz", help="an XYZ plot plan (JSON): check it and print its cells")
    x.add_argument("plan", help="plan JSON: x/y/z axes {type, values}, merge settings, gen overrides, dice")
    x.add_argument("--host", choices=["none"], default="none", help="none: a dry run that prints the cells")
    x.add_argument("--schema", help="block schema (sd1, sdxl, flux…); default: detected from model A")

    s = sub.add_parser("synth", help="write a random-weight checkpoint with an architecture's real keys")
    s.add_argument("arch", choices=["sd1", "sd2", "sdxl", "flux"])
    s.add_argument("output")
    s.add_argument("--scale", type=int, default=32, help="divide large dimensions by this (1 = full size)")
    s.add_argument("--seed", type=int, default=0)
    s.add_argument("--channels", type=int, default=4, help="UNet input channels (9 = inpainting, 8 = pix2pix)")
    s.add_argument("--dtype", default="fp16", choices=["fp16", "bf16", "fp32"])
    s.add_argument("--overwrite", action="store_true")
    return p


def main(argv: list[str] | None = None) -> int:
    try:
        args = build_parser().parse_args(argv)
        return _COMMANDS[args.command](args)
    except UsageError as e:
        print(f"error: {e}", file=sys.stderr)
        return EXIT_USAGE
    except AlloyError as e:
        print(f"error: {e}", file=sys.stderr)
        return e.exit_code
    except KeyboardInterrupt:
        print("error: cancelled", file=sys.stderr)
        return 130


def _flags_settings(args):
    from lib_merge.settings import MergeSettings

    a_only = args.calc in ("self", "random")
    if a_only and not args.mode:
        args.mode = "weighted_sum"
    if not (args.a and (args.b or a_only) and args.mode):
        raise UsageError("merge needs a recipe file, or --a, --b and --mode")
    if args.blocks and args.preset:
        raise UsageError("give either --blocks or --preset, not both")

    def path(p: str | None) -> str | None:  # CLI paths are relative to the working folder
        return os.path.abspath(p) if p and os.path.exists(p) else p

    return MergeSettings(
        path(args.a),
        path(args.b),
        args.mode,
        path(args.c),
        args.alpha,
        args.beta,
        args.blocks,
        args.preset,
        args.calc,
        args.gamma,
        args.seed,
        args.elemental,
        args.include,
        args.exclude,
        args.adjust,
    )


def _load_recipe(path: str):
    from lib_merge.recipe import parse_recipe

    try:
        with open(path, encoding="utf-8") as f:
            return parse_recipe(f.read())
    except OSError as e:
        raise UsageError(f"cannot read recipe {path}: {e.strerror}") from None


def _progress(args):
    if args.no_progress or args.quiet or not sys.stderr.isatty():
        return None
    from tqdm import tqdm

    bar = tqdm(total=0, unit="key", file=sys.stderr)

    def update(done: int, total: int, read: int, written: int, phase: str) -> None:
        bar.total = total
        bar.set_postfix_str(f"{written / 2**20:,.0f} MB written")
        bar.update(done - bar.n)
        if done == total:
            bar.close()

    return update


def _report_changes(root, args) -> None:
    from lib_merge.engine.bind import bind_recipe
    from lib_merge.engine.changes import elemental_changes, write_changes_csv

    bound = bind_recipe(root, args.models_dir)
    try:
        changes = elemental_changes(bound)
    finally:
        bound.close()
    if args.print_changes:
        for change in changes:
            print(change.line(), file=sys.stderr)
        print(f"{len(changes)} keys changed by elemental entries", file=sys.stderr)
    if args.changes_csv:
        write_changes_csv(args.changes_csv, changes)


def cmd_merge(args) -> int:
    from lib_merge.engine.run import EngineOptions
    from lib_merge.io.dtypes import parse_output_dtype
    from lib_merge.merge import SaveOptions, merge_to_file
    from lib_merge.recipe.printer import cast_dtype

    if args.recipe and (args.a or args.b or args.mode or args.method):
        raise UsageError("give a recipe file or --a/--b/--mode, not both")
    from lib_merge.settings import build_recipe

    settings = None if args.recipe or args.method else _flags_settings(args)
    if args.recipe:
        root = _load_recipe(args.recipe)
    elif args.method:
        root = _method_recipe(args)
    else:
        root = build_recipe(settings)
    if args.print_recipe:
        print(_canonical(root, args.models_dir)[0], end="")
        return 0
    if args.print_changes or args.changes_csv:
        _report_changes(root, args)
    if not args.output:
        raise UsageError("merge needs -o OUT")
    engine = EngineOptions(device=args.device, nonfinite=args.nonfinite, progress=_progress(args))
    if args.threads:
        if args.threads < 1:
            raise UsageError("--threads must be at least 1")
        engine.threads = args.threads
    save = SaveOptions(
        output=args.output,
        dtype=parse_output_dtype(args.dtype or cast_dtype(root) or "fp16"),
        overwrite=args.overwrite,
        prune=not args.no_prune,
        metadata=not args.no_metadata,
        format=args.format,
    )
    result = merge_to_file(root, save, engine, args.models_dir)
    if not args.quiet:
        for note in result.notes:
            print(f"note: {note}", file=sys.stderr)
        for role, count in sorted(result.plan.kept_missing.items()):
            print(f"note: {count} keys missing in {role} kept from A", file=sys.stderr)
    if not args.no_history:
        from lib_merge.history import append_history

        names = (
            "mode",
            "calc",
            "alpha",
            "beta",
            "gamma",
            "seed",
            "blocks",
            "preset",
            "elemental",
            "include",
            "exclude",
            "adjust",
            "dtype",
            "device",
        )
        settings = {k: getattr(args, k) for k in names}
        settings["recipe_file"] = args.recipe
        row = append_history(
            os.path.splitext(os.path.basename(result.path))[0],
            result.recipe_hash,
            result.models_text(),
            settings,
            result.path,
            result.recipe_text,
        )
        if not args.quiet:
            print(f"note: history id {row.id}", file=sys.stderr)
    print(result.recipe_hash)
    print(result.path)
    return 0


def _method_recipe(args):
    from lib_merge.settings import MethodSettings, build_method_recipe

    if not args.a or not args.models:
        raise UsageError("--method needs --a BASE and --models M1 [M2 ...]")
    if args.mode or args.b or args.c:
        raise UsageError("give --method with --a and --models, not --mode/--b/--c")

    def path(p: str) -> str:
        return os.path.abspath(p) if os.path.exists(p) else p

    return build_method_recipe(
        MethodSettings(
            path(args.a),
            [path(m) for m in args.models],
            args.method,
            args.alpha,
            args.density,
            args.p,
            args.epsilon,
            args.seed,
        )
    )


def cmd_methods(args) -> int:
    from lib_merge.methods import METHODS
    from lib_merge.settings import CALC_MODES

    print("methods (recipe functions):")
    for spec in METHODS.values():
        inputs = ", ".join(spec.inputs) + (", …" if spec.variadic else "")
        params = ", ".join(f"{p.name}={p.default!r}" if p.choices else f"{p.name}={p.default:g}" for p in spec.params)
        print(f"  {spec.name}({inputs}{', ' if params else ''}{params})  [{spec.label}]")
    print("calc modes (--calc), with the modes they work with:")
    for calc, (modes, method, _) in CALC_MODES.items():
        print(f"  {calc}: {', '.join(modes)}" + (f" -> {method}" if method else ""))
    return 0


def _canonical(root, models_dir):
    from lib_merge.engine.bind import canonical_recipe

    return canonical_recipe(root, models_dir)


def cmd_recipe(args) -> int:
    if args.action in ("compose", "from-mecha"):
        from lib_merge.recipe import print_recipe

        if args.action == "compose":
            from lib_merge.recipe.compose import compose

            text = print_recipe(compose(_load_recipe(args.file), dict(args.params)))
        else:
            from lib_merge.recipe.mecha import from_mecha

            try:
                with open(args.file, encoding="utf-8") as f:
                    imported = from_mecha(f.read())
            except OSError as e:
                raise UsageError(f"cannot read {args.file}: {e.strerror}") from None
            for note in imported.notes:
                print(f"note: {note}", file=sys.stderr)
            text = print_recipe(imported.root)
        if args.output:
            from lib_merge.io.writer import temp_path_for

            tmp = temp_path_for(os.path.abspath(args.output))
            with open(tmp, "w", encoding="utf-8") as f:
                f.write(text)
            os.replace(tmp, args.output)
            print(args.output)
        else:
            print(text, end="")
        return 0
    template = _load_recipe(args.file)
    from lib_merge.recipe.nodes import open_params

    if args.action == "print" and open_params(template):
        from lib_merge.recipe import print_recipe

        print(print_recipe(template), end="")  # a template prints with its param(...) calls
        return 0
    text, digest = _canonical(template, args.models_dir)
    print(text if args.action == "print" else digest, end="" if args.action == "print" else "\n")
    return 0


def cmd_history(args) -> int:
    from lib_merge.history import find_row, read_history, search_history

    if args.history_command == "import-supermerger":
        from pathlib import Path

        from lib_merge.history import import_supermerger

        count, skipped = import_supermerger(Path(args.file))
        for line in skipped:
            print(f"warning: {line}", file=sys.stderr)
        print(f"imported {count} rows")
        return 0
    log = read_history()
    for line in log.skipped:
        print(f"warning: {line}", file=sys.stderr)
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


def cmd_inspect(args) -> int:
    from lib_merge.report import format_inspect, inspect_model

    report = inspect_model(args.file)
    print(json.dumps(report, indent=1) if args.json else format_inspect(report))
    return 0


def cmd_info(args) -> int:
    from lib_merge.arch.registry import ARCHITECTURES
    from lib_merge.report import describe_architectures, describe_schema, format_inspect, inspect_model

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
    from lib_merge.arch.synth import SynthSpec, write_synthetic
    from lib_merge.errors import OutputExistsError
    from lib_merge.io.dtypes import parse_output_dtype

    if os.path.exists(args.output) and not args.overwrite:
        raise OutputExistsError(f"{args.output} exists; choose another name or use --overwrite")
    if args.scale < 1:
        raise UsageError("--scale must be at least 1")
    spec = SynthSpec(args.arch, args.scale, parse_output_dtype(args.dtype), args.seed, args.channels)
    print(write_synthetic(args.output, spec))
    return 0


def cmd_ui(args) -> int:
    try:
        from lib_merge.ui.standalone import serve
    except ImportError as e:
        raise UsageError(f"the UI needs gradio: pip install gradio ({e})") from None
    serve(args.models_dir or os.environ.get("ALLOY_MODELS_DIR") or ".", args.host, args.port)
    return 0


def cmd_xyz(args) -> int:
    import json

    from lib_merge.arch.blocks import SCHEMAS
    from lib_merge.source import file_schema
    from lib_merge.xyz.executor import merge_groups
    from lib_merge.xyz.plan import PlanContext, XYZPlan, expand, split_plan

    try:
        with open(args.plan, encoding="utf-8") as f:
            data = json.load(f)
    except OSError as e:
        raise UsageError(f"cannot read plan {args.plan}: {e.strerror}") from None
    except ValueError as e:
        raise UsageError(f"{args.plan}: not JSON ({e})") from None
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


_COMMANDS = {
    "merge": cmd_merge,
    "recipe": cmd_recipe,
    "inspect": cmd_inspect,
    "info": cmd_info,
    "synth": cmd_synth,
    "history": cmd_history,
    "ui": cmd_ui,
    "methods": cmd_methods,
    "xyz": cmd_xyz,
}
