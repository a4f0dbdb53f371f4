"""`explain M --a A --b B [--c C] [--json]`: the block weights that best explain M as a merge.

A poor fit is a finding, not an error: the verdict says "M is not a weighted sum of A and B: …" and the
exit code stays 0. Input problems (a missing file, another architecture, other shapes) end in one
`error:` line with the README's exit codes, before any tensor is read.
"""

from __future__ import annotations

import json
import sys

from lib_merge.surfaces.cli.common import check_new_output, count_progress


def cmd_explain(args) -> int:
    from lib_merge.app.explain import ExplainRequest, as_json, explain_files, rows, share_percent, summary

    for path in (args.recipe_out, args.chart):
        if path:
            check_new_output(path, args.overwrite)
    request = ExplainRequest(args.m, args.a, args.b, args.c, args.mode)
    outcome = explain_files(request, args.models_dir, count_progress(args, "explaining", "key"))
    written = _write_files(args, outcome)
    if args.json:
        print(json.dumps(as_json(outcome), indent=1, ensure_ascii=False))
    else:
        e = outcome.explanation
        print("block\tkeys\talpha\texplained %\tnote")
        for row in rows(e):
            print("\t".join(str(v) for v in row).rstrip("\t"))
        print(f"all\t{sum(b.keys for b in e.blocks)}\t\t{share_percent(e.explained)}\t{e.mode}")
        print(summary(e))
        print()
        print(outcome.recipe, end="")
    if not args.quiet:
        for path in written:
            print(f"note: wrote {path}", file=sys.stderr)
    return 0


def _write_files(args, outcome) -> list[str]:
    from lib_merge.io.tempfiles import write_file, write_text

    written = []
    if args.recipe_out:
        written.append(write_text(args.recipe_out, outcome.recipe, args.overwrite))
    if args.chart:
        from lib_merge.analysis.explain_chart import chart

        image = chart(outcome.explanation)
        written.append(write_file(args.chart, lambda f: image.save(f, format="PNG"), args.overwrite))
    return written
