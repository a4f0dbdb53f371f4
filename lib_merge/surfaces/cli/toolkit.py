"""prune, convert, extract, replace, fingerprint: the Toolkit on the command line, with `merge`'s
output lines (notes on stderr; the new file's sha256, then its path, on stdout) and error rules."""

from __future__ import annotations

import json
import os
import sys
from dataclasses import asdict

from lib_merge.surfaces.cli.common import count_progress
from lib_merge.surfaces.cli.errors import UsageError


def _progress(args, label: str):
    return count_progress(args, label, "key")


def _written(args, path: str, notes: list[str]) -> int:
    from lib_merge.io.hashing import file_sha256

    if not args.quiet:
        for note in notes:
            print(f"note: {note}", file=sys.stderr)
    print(file_sha256(path))
    print(path)
    return 0


def cmd_prune(args) -> int:
    return _rewrite(args, prune=True)


def cmd_convert(args) -> int:
    return _rewrite(args, prune=False)


def _rewrite(args, prune: bool) -> int:
    from lib_merge.toolkit.prune import RewriteOptions, prune_file, rewrite_dtype

    options = RewriteOptions(
        dtype=rewrite_dtype(args.dtype),
        prune=prune,
        keep_ema=getattr(args, "keep_ema", False),
        fix_position_ids=args.fix_position_ids,
        clamp=getattr(args, "clamp", False),
        overwrite=args.overwrite,
    )
    report = prune_file(args.file, args.output, options, _progress(args, "pruning" if prune else "converting"))
    return _written(args, report.written.path, report.lines())


def cmd_extract(args) -> int:
    from lib_merge.toolkit.components import extract_component

    written = extract_component(args.file, args.component, args.output, args.overwrite, _progress(args, "extracting"))
    return _written(args, written.path, [f"{written.keys} keys of the {args.component}"])


def cmd_replace(args) -> int:
    from lib_merge.toolkit.components import replace_component

    if not args.output:
        raise UsageError("replace needs -o OUT")
    written = replace_component(args.file, args.component, args.donor, args.output, args.overwrite,
                                _progress(args, "replacing"))  # fmt: skip
    return _written(args, written.path, [f"{args.component} taken from {args.donor}"])


def cmd_fingerprint(args) -> int:
    from lib_merge.toolkit.fingerprint import fingerprint

    found = fingerprint(args.file, _progress(args, "fingerprint"))
    print(json.dumps(asdict(found), indent=1) if args.json else "\n".join(found.lines()))
    return 0


def cmd_autoprune(args) -> int:
    """One line per file on stdout (the output's path); failures are notes, and the exit code says so."""
    from lib_merge.errors import CorruptModelError
    from lib_merge.toolkit.autoprune import Destinations, autoprune

    if not os.path.isdir(args.folder):
        raise UsageError(f"no such folder: {args.folder}")
    results = autoprune(args.folder, Destinations.under(args.target_dir))
    for result in results:
        if result.ok:
            print(result.output)
        elif not args.quiet:
            print(f"note: {result.message}", file=sys.stderr)
    failed = [r for r in results if not r.ok]
    if failed:
        raise CorruptModelError(f"{len(failed)} of {len(results)} files failed; they are in {args.folder}/Failed")
    return 0


def cmd_analyze(args) -> int:
    """The per-block table on stdout; the CSV, heatmap and chart files when asked for (their paths as notes)."""
    from lib_merge.analysis.report import block_rows, write_chart, write_csv, write_heatmap
    from lib_merge.analysis.similarity import compare
    from lib_merge.surfaces.cli.common import check_new_output

    for path in (args.csv, args.heatmap, args.chart):
        if path:
            check_new_output(path, args.overwrite)
    result = compare(args.a, args.b, args.attention, _progress(args, "comparing"))
    print("block\tkeys\tcosine mean %\tcosine min %\tcosine weighted %\tattention %")
    for row in block_rows(result):
        print("\t".join("" if v is None else str(v) for v in row))
    written = []
    if args.csv:
        written.append(write_csv(result, args.csv, args.overwrite))
    if args.heatmap:
        written.append(write_heatmap(result, args.heatmap, args.overwrite))
    if args.chart:
        written.append(write_chart(result, args.chart, args.overwrite))
    if not args.quiet:
        if result.skipped:
            print(f"note: {result.skipped} keys are not in both models with one shape", file=sys.stderr)
        for path in written:
            print(f"note: wrote {path}", file=sys.stderr)
    return 0


def cmd_build(args) -> int:
    from lib_merge.toolkit.components import build_checkpoint

    parts = {}
    for item in args.component:
        name, sep, path = item.partition("=")
        if not sep or not name or not path:
            raise UsageError(f"--component {item!r}: give NAME=FILE, e.g. vae=vae.safetensors")
        parts[name.strip()] = path
    written = build_checkpoint(args.arch, parts, args.output, args.overwrite, _progress(args, "building"))
    return _written(args, written.path, [f"{written.keys} keys from {len(parts)} files"])
