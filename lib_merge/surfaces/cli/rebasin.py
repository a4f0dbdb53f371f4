"""`rebasin`: B aligned to A by exact permutations, written as π(B) or merged with A, with `merge`'s
output lines, error lines and exit codes."""

from __future__ import annotations

import os
import sys

from lib_merge.surfaces.cli.common import count_progress
from lib_merge.surfaces.cli.errors import UsageError
from lib_merge.surfaces.cli.merge import save_merge


def cmd_rebasin(args) -> int:
    from lib_merge.recipe.form import MergeSettings, build_recipe, rebasin_node
    from lib_merge.recipe.nodes import ModelRef

    if not args.output:
        raise UsageError("rebasin needs -o OUT")
    a, b = (os.path.abspath(p) if os.path.exists(p) else p for p in (args.a, args.b))
    node = rebasin_node(ModelRef(b), ModelRef(a), args.max_sweeps)  # the sweep cap's default and range: the method's
    sweeps = node.params["max_sweeps"]
    if args.alpha is not None:
        form = MergeSettings(a, b, alpha=args.alpha, rebasin=True, max_sweeps=args.max_sweeps)
        root = build_recipe(form)
    else:
        form, root = None, node
    if args.self_check:
        _self_check(a, sweeps, args)
    return save_merge(root, form, args, rebasin={"max_sweeps": sweeps, "self_check": args.self_check})


def _self_check(a: str, max_sweeps: int, args) -> None:
    """The symmetry checks on real-layout blocks, then A matched to itself must give identities."""
    from lib_merge.io.device import check_device
    from lib_merge.io.source import SourceModel
    from lib_merge.rebasin.groups import permutation_groups
    from lib_merge.rebasin.matching import MatchSettings
    from lib_merge.rebasin.selfcheck import check_blocks, check_identity

    device = str(check_device(args.device))  # refused before the checks and the read
    checks = check_blocks()
    model = SourceModel(a)
    try:
        groups = permutation_groups(model.shapes, model.arch.id)
        progress = count_progress(args, "self-check", "layer")
        settings = MatchSettings(max_sweeps, device)
        checked = check_identity(model, groups, settings, progress=progress)
    finally:
        model.close()
    if not args.quiet:
        print(f"note: self-check passed: {len(checks)} block checks, {checked} groups of A matched to themselves",
              file=sys.stderr)  # fmt: skip
