"""The command line: `python -m lib_merge COMMAND`.

Every failure prints one line starting with `error:` and exits with a documented code (README,
"Command line"); no input ends in a traceback. SIGTERM is handled like Ctrl-C: the temporary file
is removed and the exit code is 143. The last stdout line of a successful merge is the output path.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import signal
import sys
import threading

from lib_merge.errors import AlloyError

EXIT_USAGE = 2
EXIT_UNEXPECTED = 1
EXIT_CANCELLED = 130
EXIT_TERMINATED = 143
EXIT_BROKEN_PIPE = 141


class UsageError(Exception):
    pass


class Terminated(BaseException):
    """SIGTERM arrived: unwinds like KeyboardInterrupt, so every cleanup runs."""


def finite_float(text: str) -> float:
    """argparse type: a finite number (inf and nan are refused before anything is read)."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number") from None
    if not math.isfinite(value):
        raise argparse.ArgumentTypeError(f"{text!r} is not a finite number")
    return value


def whole_number(text: str) -> int:
    try:
        return int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a whole number") from None


class _Parser(argparse.ArgumentParser):
    def error(self, message: str):  # one clear line, exit code 2
        raise UsageError(message)


def build_parser() -> argparse.ArgumentParser:
    p = _Parser(prog="python -m lib_merge", description="Alloy: streaming model merges for Stable Diffusion")
    p.add_argument("--models-dir", help="folder that relative model paths in recipes resolve against")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.add_argument("--quiet", action="store_true")
    sub = p.add_subparsers(dest="command", parser_class=_Parser, metavar="COMMAND")

    m = sub.add_parser("merge", help="merge models (from a recipe file or from flags) into a file")
    m.add_argument("recipe", nargs="?", help="recipe file (.alloy)")
    m.add_argument("--a", help="model A (primary)")
    m.add_argument("--b", help="model B")
    m.add_argument("--c", help="model C")
    m.add_argument("--mode", help="weighted_sum | add_difference | triple_sum | sum_twice (ws, add, triple, twice)")
    m.add_argument("--alpha", type=finite_float)
    m.add_argument("--beta", type=finite_float)
    m.add_argument(
        "--calc",
        default="normal",
        help="calc mode: normal, trainDifference, smoothAdd, smoothAddMT, extract, tensor, tensor2, self, random",
    )
    m.add_argument("--gamma", type=finite_float, help="gamma (extract)")
    m.add_argument("--seed", type=whole_number, help="seed of random calc modes")
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
    m.add_argument("--density", type=finite_float)
    m.add_argument("--p", type=finite_float, help="drop probability (DARE)")
    m.add_argument("--epsilon", type=finite_float, help="DELLA's spread of keep probabilities")
    m.add_argument("--blocks", help='alpha as a block vector: "IN00=0.3 OUT05-OUT11=1 *=0.5" or 26/20 values')
    m.add_argument("--preset", help="alpha as a block-weight preset name")
    m.add_argument("--dtype", choices=["fp16", "bf16", "fp32"], help="default: a recipe's cast(…), else fp16")
    m.add_argument("--device", default="cpu")
    m.add_argument("--threads", type=whole_number)
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
    hl.add_argument("--limit", type=whole_number, default=20)
    hs = hsub.add_parser("search", help="rows containing all the words (or any, with --or)")
    hs.add_argument("words", nargs="+")
    hs.add_argument("--or", dest="any_word", action="store_true")
    hw = hsub.add_parser("show", help="one row with its settings and recipe (-1 = the last)")
    hw.add_argument("id", type=whole_number)
    for history_parser in (hl, hs, hw):
        history_parser.add_argument(
            "--file", help="read this history file (e.g. a history.csv.damaged-… moved aside) instead"
        )
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
    r.add_argument("-o", "--output", help="compose, from-mecha: write the recipe here instead of printing it")
    r.add_argument("--overwrite", action="store_true", help="replace an existing -o file")

    i = sub.add_parser("inspect", help="architecture, components, keys, dtypes and size of a checkpoint")
    i.add_argument("file")
    i.add_argument("--json", action="store_true")

    n = sub.add_parser("info", help="architectures and block schemas; or detection results for a file")
    n.add_argument("target", nargs="?", help="an architecture id or a checkpoint file")
    n.add_argument("-v", "--verbose", action="store_true", help="list the keys of every block")
    sub.add_parser("methods", help="every merge method and calc mode with its inputs and parameters")

    u = sub.add_parser("ui", help="the Alloy tabs in a browser, without the WebUI (merges go to files)")
    u.add_argument("--host", default="127.0.0.1", help="address to bind (another than 127.0.0.1 needs --auth)")
    u.add_argument("--port", type=whole_number, default=7870)
    u.add_argument("--auth", metavar="USER:PASS", help="HTTP Basic credentials for the page and the HTTP API")
    u.add_argument("--insecure", action="store_true", help="bind another address without --auth anyway")

    c = sub.add_parser("clean", help="remove temporary files that killed merges left behind")
    c.add_argument("folder", nargs="?", help="default: --models-dir, $ALLOY_MODELS_DIR or the current folder")

    x = sub.add_parser("xyz", help="an XYZ plot plan (JSON): check it and print its cells")
    x.add_argument("plan", help="plan JSON: x/y/z axes {type, values}, merge settings, gen overrides, dice")
    x.add_argument("--host", choices=["none"], default="none", help="none: a dry run that prints the cells")
    x.add_argument("--schema", help="block schema (sd1, sdxl, flux…); default: detected from model A")

    s = sub.add_parser("synth", help="write a random-weight checkpoint with an architecture's real keys")
    s.add_argument("arch", choices=["sd1", "sd2", "sdxl", "flux"])
    s.add_argument("output")
    s.add_argument("--scale", type=whole_number, default=32, help="divide large dimensions by this (1 = full size)")
    s.add_argument("--seed", type=whole_number, default=0)
    s.add_argument(
        "--channels", type=int, choices=[4, 8, 9], default=4, help="UNet input channels (9 = inpainting, 8 = pix2pix)"
    )
    s.add_argument("--dtype", default="fp16", choices=["fp16", "bf16", "fp32"])
    s.add_argument("--overwrite", action="store_true")
    return p


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else [str(a) for a in argv]
    previous = _handle_sigterm()
    try:
        parser = build_parser()
        args = parser.parse_args(argv)
        if args.command is None:
            parser.print_help()
            return 0
        return _COMMANDS[args.command](args)
    except UsageError as e:
        return _fail(str(e), EXIT_USAGE)
    except AlloyError as e:
        return _fail(str(e), e.exit_code)
    except KeyboardInterrupt:
        return _fail("cancelled", EXIT_CANCELLED)
    except Terminated:
        return _fail("terminated", EXIT_TERMINATED)
    except BrokenPipeError:
        return _quiet_broken_pipe()
    except OSError as e:
        where = f"{e.filename}: " if e.filename else ""
        return _fail(f"{where}{e.strerror or e}", EXIT_UNEXPECTED)
    except Exception as e:  # noqa: BLE001 - the last net: one line, never a traceback
        if os.environ.get("ALLOY_DEBUG"):
            raise
        return _fail(f"unexpected {type(e).__name__}: {e} (ALLOY_DEBUG=1 shows where)", EXIT_UNEXPECTED)
    finally:
        if previous is not None:
            signal.signal(signal.SIGTERM, previous)


def _fail(message: str, code: int) -> int:
    try:
        print(f"error: {message}", file=sys.stderr, flush=True)
    except (BrokenPipeError, ValueError):
        pass
    return code


def _handle_sigterm():
    """SIGTERM raises Terminated in the main thread (a second one during the cleanup is ignored)."""
    if threading.current_thread() is not threading.main_thread():
        return None

    def terminate(signum, frame):
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        raise Terminated

    return signal.signal(signal.SIGTERM, terminate)


def _quiet_broken_pipe() -> int:
    """The reader went away (`| head`): stop quietly, as command-line tools do."""
    try:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
    except (OSError, ValueError):
        pass
    return EXIT_BROKEN_PIPE


def _flags_settings(args):
    from lib_merge.recipe.form import MergeSettings

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
    from lib_merge.recipe import parse_recipe, read_recipe_file

    return parse_recipe(read_recipe_file(path))


def _progress(args):
    """A progress bar on a terminal: hashing (MB) and merging (keys, MB written), made at the first update."""
    if args.no_progress or args.quiet or not sys.stderr.isatty():
        return None
    from tqdm import tqdm

    bars: dict[str, tqdm] = {}

    def update(event) -> None:
        bar = bars.get(event.phase)
        if bar is None:  # hashing runs beside merging: one line each
            if event.unit == "bytes":
                options = {"unit": "B", "unit_scale": True, "unit_divisor": 1024, "desc": f"hashing {event.item}"}
            else:
                options = {"unit": "key", "desc": event.phase}
            bar = bars[event.phase] = tqdm(
                total=event.total, file=sys.stderr, leave=False, position=len(bars), **options
            )
        elif event.unit == "bytes" and bar.desc != f"hashing {event.item}":
            bar.reset(total=event.total)
            bar.set_description_str(f"hashing {event.item}", refresh=False)
        bar.total = event.total
        if event.unit == "keys":
            bar.set_postfix_str(f"{event.bytes_done / 2**20:,.0f} MB written", refresh=False)
        bar.update(event.done - bar.n)
        if event.phase == "merging" and event.done >= event.total:
            for each in reversed(list(bars.values())):  # the lower line first, as tqdm expects
                each.close()

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
        write_changes_csv(args.changes_csv, changes, args.overwrite)


def cmd_merge(args) -> int:
    from lib_merge.engine.options import EngineOptions
    from lib_merge.engine.to_file import SaveOptions
    from lib_merge.io.dtypes import parse_output_dtype
    from lib_merge.recipe.form import build_recipe
    from lib_merge.recipe.printer import cast_dtype

    if args.recipe and (args.a or args.b or args.mode or args.method):
        raise UsageError("give a recipe file or --a/--b/--mode, not both")
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
    if not args.output:
        raise UsageError("merge needs -o OUT")
    if args.threads is not None and args.threads < 1:
        raise UsageError("--threads must be at least 1")
    if settings is not None:
        _warn_unused_alpha(settings, args)
    if args.print_changes or args.changes_csv:
        _report_changes(root, args)
    engine = EngineOptions(device=args.device, nonfinite=args.nonfinite, progress=_progress(args))
    if args.threads:
        engine.threads = args.threads
    save = SaveOptions(
        output=args.output,
        dtype=parse_output_dtype(args.dtype or cast_dtype(root) or "fp16"),
        overwrite=args.overwrite,
        prune=not args.no_prune,
        metadata=not args.no_metadata,
        format=args.format,
    )
    result, row = _merge_and_log(root, save, engine, args)
    if not args.quiet:
        for note in result.notes:
            print(f"note: {note}", file=sys.stderr)
        for role, count in sorted(result.plan.kept_missing.items()):
            print(f"note: {count} keys missing in {role} kept from A", file=sys.stderr)
        if row is not None:
            print(f"note: history id {row.id}", file=sys.stderr)
    print(result.recipe_hash)
    print(result.path)
    return 0


def _merge_and_log(root, save, engine, args):
    from lib_merge.app.history import RowDraft, history_file
    from lib_merge.app.history.record import merge_and_log

    names = ("mode", "calc", "alpha", "beta", "gamma", "seed", "blocks", "preset", "elemental", "include",
             "exclude", "adjust", "dtype", "device")  # fmt: skip
    settings = {k: getattr(args, k) for k in names}
    settings["recipe_file"] = args.recipe

    def draft(result) -> RowDraft:
        name = os.path.splitext(os.path.basename(result.path))[0]
        return RowDraft(name, result.recipe_hash, result.models_text(), settings, result.path, result.recipe_text)

    def warn(text: str) -> None:
        print(f"warning: {text}", file=sys.stderr)

    history = None if args.no_history else history_file()
    return merge_and_log(root, save, engine, args.models_dir, history, draft, warn)


def _warn_unused_alpha(settings, args) -> None:
    """--alpha fills only the blocks a vector leaves open: say so when it fills none."""
    from lib_merge.recipe.form import vector_covers_every_block

    if args.alpha is None or not (args.blocks or args.preset) or args.quiet:
        return
    if vector_covers_every_block(settings):
        print(f"warning: --alpha {args.alpha:g} is not used: the block vector sets every block", file=sys.stderr)


def _method_recipe(args):
    from lib_merge.recipe.form import MethodSettings, build_method_recipe

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
    from lib_merge.recipe.form import CALC_MODES
    from lib_merge.recipe.printer import format_param

    print("methods (recipe functions):")
    for spec in METHODS.values():
        inputs = ", ".join(spec.inputs) + (", …" if spec.variadic else "")
        params = ", ".join(f"{p.name}={format_param(p.default, p)}" for p in spec.params)
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
            from lib_merge.recipe import read_recipe_file
            from lib_merge.recipe.mecha import from_mecha

            imported = from_mecha(read_recipe_file(args.file))
            for note in imported.notes:
                print(f"note: {note}", file=sys.stderr)
            text = print_recipe(imported.root)
        if args.output:
            from lib_merge.io.tempfiles import write_text

            _check_new_output(args.output, args.overwrite)
            write_text(args.output, text, args.overwrite)
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


def _check_new_output(path: str, overwrite: bool) -> None:
    from lib_merge.errors import OutputExistsError, UnsafePathError

    folder = os.path.dirname(os.path.abspath(path))
    if not os.path.isdir(folder):
        raise UnsafePathError(f"output folder does not exist: {folder}")
    if os.path.exists(path) and not overwrite:
        raise OutputExistsError(f"{path} exists; choose another name or use --overwrite")


def cmd_history(args) -> int:
    from pathlib import Path

    from lib_merge.app.history import find_row, read_history, search_history

    if args.history_command == "import-supermerger":
        from lib_merge.app.history import import_supermerger

        count, skipped = import_supermerger(Path(args.file), warn=_warn)
        for line in skipped:
            _warn(line)
        print(f"imported {count} rows")
        return 0
    log = read_history(Path(args.file) if args.file else None)
    for line in log.skipped:
        _warn(line)
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


def _warn(text: str) -> None:
    print(f"warning: {text}", file=sys.stderr)


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
            _warn(f"could not remove {path}")
        if not args.quiet:
            for path in report.removed:
                print(f"removed {path}")
        print(report.text(where))
    recovered = recover_history(warn=_warn)
    if recovered:
        print(f"logged {recovered} history row{'s' if recovered != 1 else ''} of merges killed before logging")
    return 0


def cmd_inspect(args) -> int:
    from lib_merge.io.report import format_inspect, inspect_model

    report = inspect_model(args.file)
    print(json.dumps(report, indent=1) if args.json else format_inspect(report))
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
    from lib_merge.io.dtypes import parse_output_dtype
    from lib_merge.io.synth import SynthSpec, write_synthetic

    _check_new_output(args.output, args.overwrite)
    if args.scale < 1:
        raise UsageError("--scale must be at least 1")
    spec = SynthSpec(args.arch, args.scale, parse_output_dtype(args.dtype), args.seed, args.channels)
    print(write_synthetic(args.output, spec, overwrite=args.overwrite))
    return 0


def cmd_ui(args) -> int:
    try:
        from lib_merge.surfaces.standalone import serve
    except ImportError as e:
        raise UsageError(f"the UI needs gradio: pip install gradio ({e})") from None
    from lib_merge.surfaces.standalone import ServeOptions, parse_auth

    options = ServeOptions(args.host, args.port, parse_auth(args.auth) if args.auth else None, args.insecure)
    serve(args.models_dir or os.environ.get("ALLOY_MODELS_DIR") or ".", options)
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
            _warn(warning)
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
    "clean": cmd_clean,
}
