"""The command line: `python -m lib_merge COMMAND`.

Every failure prints one line starting with `error:` and exits with a documented code (README,
"Command line"); no input ends in a traceback. SIGTERM is handled like Ctrl-C: the temporary file
is removed and the exit code is 143. The last stdout line of a successful merge is the output path.
"""

from __future__ import annotations

import os
import signal
import sys
import threading

from lib_merge.errors import AlloyError
from lib_merge.surfaces.cli import commands
from lib_merge.surfaces.cli.errors import (
    EXIT_BROKEN_PIPE,
    EXIT_CANCELLED,
    EXIT_TERMINATED,
    EXIT_UNEXPECTED,
    EXIT_USAGE,
    Terminated,
    UsageError,
)
from lib_merge.surfaces.cli.lora import cmd_lora
from lib_merge.surfaces.cli.merge import cmd_merge
from lib_merge.surfaces.cli.parser import build_parser


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else [str(a) for a in argv]
    previous = _handle_sigterm()
    try:
        parser = build_parser()
        args = parser.parse_args(argv)
        if args.command is None:
            parser.print_help()
            return 0
        return COMMANDS[args.command](args)
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
}
