"""`merge`: a recipe file, mode flags or a modern method into one file, with its history row."""

from __future__ import annotations

import os
import sys

from lib_merge.surfaces.cli.common import canonical, load_recipe
from lib_merge.surfaces.cli.errors import UsageError


def _flags_settings(args):
    from lib_merge.recipe.form import MergeSettings

    a_only = args.calc in ("self", "random")
    if not args.mode:  # SuperMerger's default: a weighted sum (at the method's alpha, 0.5)
        args.mode = "weighted_sum"
    if not (args.a and (args.b or a_only)):
        raise UsageError("merge needs a recipe file, or --a and --b (and --mode, default weighted_sum)")
    if args.blocks and args.preset:
        raise UsageError("give either --blocks or --preset, not both")

    def path(p: str | None) -> str | None:  # CLI paths are relative to the working folder
        return os.path.abspath(p) if p and os.path.exists(p) else p

    return MergeSettings(
        a=path(args.a),
        b=path(args.b),
        mode=args.mode,
        c=path(args.c),
        alpha=args.alpha,
        beta=args.beta,
        blocks=args.blocks,
        preset=args.preset,
        calc=args.calc,
        gamma=args.gamma,
        seed=args.seed,
        elemental=args.elemental,
        include=args.include,
        exclude=args.exclude,
        adjust=args.adjust,
        beta_blocks=args.beta_blocks,
        rebasin=args.rebasin,
        max_sweeps=args.max_sweeps,
    )


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
                options = {"unit": "tensor", "desc": event.phase}
            bar = bars[event.phase] = tqdm(
                total=event.total, file=sys.stderr, leave=False, position=len(bars), **options
            )
        elif event.unit == "bytes" and bar.desc != f"hashing {event.item}":
            bar.reset(total=event.total)
            bar.set_description_str(f"hashing {event.item}", refresh=False)
        bar.total = event.total
        if event.phase == "merging":
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
    from lib_merge.recipe.form import MergeSettings, build_method_recipe, build_recipe

    if args.recipe and (args.a or args.b or args.mode or args.method):
        raise UsageError("give a recipe file or --a/--b/--mode, not both")
    if args.param and not args.method:
        words = " ".join("--" + item.partition("=")[0] for item in args.param)
        raise UsageError(f"unrecognized arguments: {words} (a method's parameters need --method)")
    if args.recipe:
        form, root = None, load_recipe(args.recipe)
    elif args.method:
        form = _method_settings(args)
        root = build_method_recipe(form)
    else:
        form = _flags_settings(args)
        root = build_recipe(form)
    if args.print_recipe:
        print(canonical(root, args.models_dir).text, end="")
        return 0
    if not args.output:
        raise UsageError("merge needs -o OUT")
    if args.threads is not None and args.threads < 1:
        raise UsageError("--threads must be at least 1")
    if isinstance(form, MergeSettings):
        _warn_unused_alpha(form, args)
    if args.print_changes or args.changes_csv:
        _report_changes(root, args)
    return save_merge(root, form, args)


def save_merge(root, form, args, **record) -> int:
    """Merge `root` into -o OUT with its history row, and print the notes, the hash and the path
    (the output lines of every command that writes a model)."""
    from lib_merge.engine.options import EngineOptions

    engine = EngineOptions(device=args.device, nonfinite=getattr(args, "nonfinite", "error"), progress=_progress(args))
    if getattr(args, "threads", None):
        engine.threads = args.threads
    result, row = _merge_and_log(root, engine, form, args, record)
    if not args.quiet:
        for note in result.notes:
            print(note if note.startswith("warning: ") else f"note: {note}", file=sys.stderr)
        for role, count in sorted(result.plan.kept_missing.items()):
            print(f"note: {count} keys missing in {role} kept from A", file=sys.stderr)
        if row is not None:
            print(f"note: history id {row.id}", file=sys.stderr)
    print(result.recipe_hash)
    print(result.path)
    return 0


def _merge_and_log(root, engine, form, args, extra: dict):
    """The merge and its history row, through the service the Workbench saves with."""
    from lib_merge.app.history import history_file, settings_record
    from lib_merge.app.saving import SaveJob, save_and_log, save_request_for

    save = save_request_for(
        args.output,
        args.dtype,
        getattr(args, "format", None),
        overwrite=args.overwrite,
        prune=not getattr(args, "no_prune", False),
        clamp=getattr(args, "clamp", False),
        layout=getattr(args, "layout", None) or "",
    )
    settings = settings_record(form, device=args.device, recipe_file=getattr(args, "recipe", None), **extra)
    job = SaveJob(args.output, save, settings, metadata=not getattr(args, "no_metadata", False))

    def warn(text: str) -> None:
        print(f"warning: {text}", file=sys.stderr)

    history = None if args.no_history else history_file()
    return save_and_log(root, job, engine, args.models_dir, history, warn)


def _warn_unused_alpha(settings, args) -> None:
    """--alpha fills only the blocks a vector leaves open: say so when it fills none."""
    from lib_merge.recipe.form import vector_covers_every_block

    if args.alpha is None or not (args.blocks or args.preset) or args.quiet:
        return
    if vector_covers_every_block(settings):
        print(f"warning: --alpha {args.alpha:g} is not used: the block vector sets every block", file=sys.stderr)


def _method_settings(args):
    from lib_merge.recipe.form import MethodSettings

    if not args.a or not args.models:
        raise UsageError("--method needs --a BASE and --models M1 [M2 ...]")
    if args.mode or args.b or args.c:
        raise UsageError("give --method with --a and --models, not --mode/--b/--c")

    def path(p: str) -> str:
        return os.path.abspath(p) if os.path.exists(p) else p

    return MethodSettings(
        path(args.a),
        [path(m) for m in args.models],
        args.method,
        method_params_given(args),
        rebasin=args.rebasin,
        max_sweeps=args.max_sweeps,
    )


def method_params_given(args) -> dict[str, object]:
    """--param NAME=VALUE (and --NAME VALUE) as text, read and checked by the method's own declaration;
    --alpha and --seed, the modes' flags, count too."""
    given: dict[str, object] = {}
    for item in args.param or []:
        name, equals, value = item.partition("=")
        if not equals or not name.strip():
            raise UsageError(f"--param takes NAME=VALUE, not {item!r}")
        if name.strip() in given:
            raise UsageError(f"the parameter {name.strip()!r} is given twice")
        given[name.strip()] = value
    for name in ("alpha", "seed"):
        if getattr(args, name, None) is not None:
            given.setdefault(name, getattr(args, name))
    return given
