"""The command line: `python -m lib_merge COMMAND`.

Every failure prints one line starting with `error:` and exits with a documented code (README,
"Command line"); no input ends in a traceback. SIGTERM is handled like Ctrl-C: the temporary file
is removed and the exit code is 143. The last stdout line of a successful merge is the output path.
"""

from __future__ import annotations

import os
import sys

from lib_merge.errors import AlloyError, message_for
from lib_merge.surfaces.cli import commands, toolkit
from lib_merge.surfaces.cli.errors import (
    EXIT_BROKEN_PIPE,
    EXIT_CANCELLED,
    EXIT_TERMINATED,
    EXIT_UNEXPECTED,
    EXIT_USAGE,
    Terminated,
    UsageError,
)
from lib_merge.surfaces.cli.explain import cmd_explain
from lib_merge.surfaces.cli.lora import cmd_lora
from lib_merge.surfaces.cli.merge import cmd_merge
from lib_merge.surfaces.cli.optimize import cmd_optimize
from lib_merge.surfaces.cli.parser import build_parser, parse_arguments
from lib_merge.surfaces.cli.rebasin import cmd_rebasin
from lib_merge.surfaces.cli.signals import handle_signals, restore_signals
from lib_merge.surfaces.cli.xyz_run import cmd_xyz_run


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else [str(a) for a in argv]
    signals: list[str] = []  # "cancelled" (SIGINT) or "terminated" (SIGTERM), as they arrive
    previous = handle_signals(signals)
    try:
        parser = build_parser()
        args = parse_arguments(parser, argv)
        if args.command is None:
            parser.print_help()
            return 0
        return COMMANDS[args.command](args)
    except (SystemExit, GeneratorExit):
        raise
    except BaseException as e:  # noqa: BLE001 - every failure becomes one line and an exit code
        return _failure(e, signals)
    finally:
        restore_signals(previous)


_SIGNALLED = {"cancelled": EXIT_CANCELLED, "terminated": EXIT_TERMINATED}


def _failure(e: BaseException, signals: list[str]) -> int:
    """The error line and exit code of what ended the command. After a signal, whatever unwound the
    work (an interrupted lock wait raises RuntimeError, a worker's Cancelled) reports the signal."""
    if signals:
        return _fail(signals[0], _SIGNALLED[signals[0]])
    if isinstance(e, UsageError):
        return _fail(str(e), EXIT_USAGE)
    if isinstance(e, AlloyError):
        return _fail(message_for(e, "cli"), e.exit_code)
    if isinstance(e, KeyboardInterrupt):
        return _fail("cancelled", EXIT_CANCELLED)
    if isinstance(e, Terminated):
        return _fail("terminated", EXIT_TERMINATED)
    if isinstance(e, BrokenPipeError):
        return _quiet_broken_pipe()
    if isinstance(e, OSError):
        where = f"{e.filename}: " if e.filename else ""
        return _fail(f"{where}{e.strerror or e}", EXIT_UNEXPECTED)
    if os.environ.get("ALLOY_DEBUG") or not isinstance(e, Exception):
        raise e
    return _fail(f"unexpected {type(e).__name__}: {e} (ALLOY_DEBUG=1 shows where)", EXIT_UNEXPECTED)


def _fail(message: str, code: int) -> int:
    try:
        print(f"error: {message}", file=sys.stderr, flush=True)
    except (BrokenPipeError, ValueError):
        pass
    return code


def _quiet_broken_pipe() -> int:
    """The reader went away (`| head`): stop quietly, as command-line tools do."""
    try:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
    except (OSError, ValueError):
        pass
    return EXIT_BROKEN_PIPE


COMMANDS = {
    "merge": cmd_merge,
    "recipe": commands.cmd_recipe,
    "inspect": commands.cmd_inspect,
    "info": commands.cmd_info,
    "synth": commands.cmd_synth,
    "history": commands.cmd_history,
    "ui": commands.cmd_ui,
    "methods": commands.cmd_methods,
    "xyz": commands.cmd_xyz,
    "lora": cmd_lora,
    "clean": commands.cmd_clean,
    "prune": toolkit.cmd_prune,
    "convert": toolkit.cmd_convert,
    "extract": toolkit.cmd_extract,
    "replace": toolkit.cmd_replace,
    "fingerprint": toolkit.cmd_fingerprint,
    "autoprune": toolkit.cmd_autoprune,
    "analyze": toolkit.cmd_analyze,
    "build": toolkit.cmd_build,
    "rebasin": cmd_rebasin,
    "explain": cmd_explain,
    "optimize": cmd_optimize,
    "xyz-run": cmd_xyz_run,
}
