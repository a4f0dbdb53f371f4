"""The command line's arguments: one parser, with help read from the method registry when shown."""

from __future__ import annotations

import argparse

from lib_merge import __version__
from lib_merge.arch.layouts import LAYOUTS
from lib_merge.arch.registry import ARCHITECTURES
from lib_merge.surfaces.cli.arg_types import finite_float, whole_number
from lib_merge.surfaces.cli.errors import UsageError
from lib_merge.surfaces.cli.optimize import optimize_commands
from lib_merge.surfaces.cli.parser_files import lora_commands, save_dtype_options, toolkit_commands


class _FromRegistry(str):
    """Help text made from the method registry only when help is shown (the registry imports torch)."""

    def __new__(cls, render):
        text = super().__new__(cls, "(see the method registry)")
        text.render = render
        return text


class _Formatter(argparse.HelpFormatter):
    def _get_help_string(self, action: argparse.Action) -> str:
        if isinstance(action.help, _FromRegistry):
            return action.help.render().replace("%", "%%")
        return super()._get_help_string(action)


class _Parser(argparse.ArgumentParser):
    def __init__(self, *args, **kwargs):
        kwargs.setdefault("formatter_class", _Formatter)
        super().__init__(*args, **kwargs)

    def error(self, message: str):  # one clear line, exit code 2
        raise UsageError(message)


def _param_help(name: str, suffix: str = "") -> _FromRegistry:
    """--NAME's help: the methods that take the parameter, with their defaults and ranges."""

    def render() -> str:
        from lib_merge.methods import METHODS
        from lib_merge.recipe.printer import format_param

        groups: dict[str, list[str]] = {}  # "0.5" or "0.5, 0 to 1" -> the methods with that default
        for spec in METHODS.values():
            if spec.takes(name) and spec.kind != "op":
                p = spec.param(name)
                low, high = (int(p.low), int(p.high)) if p.integer else (p.low, p.high)
                bounds = f", {low:g} to {high:g}" if p.enforce and not p.integer else ""
                bounds = f", {low} to {high}" if p.enforce and p.integer else bounds
                groups.setdefault(format_param(p.default, p) + bounds, []).append(spec.name)
        return "; ".join(f"{', '.join(names)}: default {text}" for text, names in groups.items()) + suffix

    return _FromRegistry(render)


def _calc_help() -> _FromRegistry:
    def render() -> str:
        from lib_merge.recipe.form import CALC_ALIASES, CALC_MODES

        aliases = ", ".join(f"'{alias}'" for alias in CALC_ALIASES)
        return f"calc mode: {', '.join(CALC_MODES)} (SuperMerger's {aliases} too)"

    return _FromRegistry(render)


def _names_help(kind: str, prefix: str = "") -> _FromRegistry:
    def render() -> str:
        from lib_merge.methods import METHODS, MODE_ALIASES, names_of_kind

        names = names_of_kind(kind)
        aliases = [f"{alias}={name}" for alias, name in MODE_ALIASES.items() if name in names]
        labels = [f'"{METHODS[n].label}"' for n in names] if kind == "mode" else []  # SuperMerger's names
        return (
            prefix
            + " | ".join(names)
            + (f" (short: {', '.join(aliases)})" if aliases else "")
            + (f"; also {', '.join(labels)}" if labels else "")
        )

    return _FromRegistry(render)


_GLOBAL_OPTIONS = {
    "--models-dir": {"help": "folder that relative model paths in recipes resolve against"},
    "--no-progress": {"action": "store_true", "help": "no progress bar"},
    "--quiet": {"action": "store_true", "help": "print nothing but results and errors"},
}


def _accept_global_options(p: argparse.ArgumentParser) -> None:
    """The global options after any subcommand too (`merge … --no-progress`).

    Added there without defaults, so a subcommand not given one keeps the value given before it;
    a subcommand's own option of the same name (autoprune's --models-dir) stays its own."""
    for action in p._actions:
        if not isinstance(action, argparse._SubParsersAction):
            continue
        for child in dict.fromkeys(action.choices.values()):
            for name, spec in _GLOBAL_OPTIONS.items():
                if name not in child._option_string_actions:
                    child.add_argument(name, default=argparse.SUPPRESS, **spec)
            _accept_global_options(child)


def build_parser() -> argparse.ArgumentParser:
    p = _Parser(prog="python -m lib_merge", description="Alloy: streaming model merges for Stable Diffusion")
    for name, spec in _GLOBAL_OPTIONS.items():
        p.add_argument(name, **spec)
    p.add_argument("--version", action="version", version=f"Alloy {__version__}")
    sub = p.add_subparsers(dest="command", parser_class=_Parser, metavar="COMMAND")

    merge = _merge_command(sub)
    _history_command(sub)
    _other_commands(sub)
    lora_commands(sub)
    toolkit_commands(sub)
    _rebasin_command(sub)
    _explain_command(sub)
    optimize_commands(sub)
    _accept_global_options(p)
    p.merge_options = {option for action in merge._actions for option in action.option_strings}
    return p


def parse_arguments(parser: argparse.ArgumentParser, argv: list[str]) -> argparse.Namespace:
    """The command line; after `merge`, any `--NAME VALUE` that is not one of its options is a parameter
    of the method (`--param NAME=VALUE`), checked against the method's declaration when the command runs."""
    known = getattr(parser, "merge_options", set())
    command = _command_index(argv)
    if command is not None and argv[command] == "merge":
        argv = argv[: command + 1] + _method_flags(argv[command + 1 :], known)
    if command is not None and argv[command] == "xyz" and argv[command + 1 : command + 2] == ["run"]:
        argv = [*argv[:command], "xyz-run", *argv[command + 2 :]]  # `xyz PLAN` checks a plan, `xyz run` runs it
    return parser.parse_args(argv)


def _command_index(argv: list[str]) -> int | None:
    """Where the command word stands: the first word that is neither a global option nor its value."""
    takes_value = {name for name, spec in _GLOBAL_OPTIONS.items() if spec.get("action") != "store_true"}
    i = 0
    while i < len(argv):
        word = argv[i]
        if not word.startswith("-"):
            return i
        i += 2 if word in takes_value else 1
    return None


def _method_flags(words: list[str], known: set[str]) -> list[str]:
    """["--density", "0.3", "--sign=mean"] as ["--param", "density=0.3", "--param", "sign=mean"]."""
    out, rest = [], list(words)
    while rest:
        word = rest.pop(0)
        name, equals, value = word[2:].partition("=")
        if (
            not word.startswith("--")
            or word.partition("=")[0] in known
            or not name.replace("_", "").replace("-", "").isalnum()
        ):
            out.append(word)
            continue
        if not equals:
            if not rest:
                raise UsageError(f"{word} needs a value")
            value = rest.pop(0)
        out += ["--param", f"{name.replace('-', '_')}={value}"]
    return out


def _merge_command(sub) -> argparse.ArgumentParser:
    m = sub.add_parser("merge", help="merge models (from a recipe file or from flags) into a file", allow_abbrev=False)
    m.add_argument("recipe", nargs="?", help="recipe file (.alloy)")
    m.add_argument("--a", help="model A (primary)")
    m.add_argument("--b", help="model B")
    m.add_argument("--c", help="model C")
    m.add_argument("--mode", help=_names_help("mode", "default weighted_sum: "))
    m.add_argument("--alpha", type=finite_float, help=_param_help("alpha"))
    m.add_argument("--beta", type=finite_float, help=_param_help("beta"))
    m.add_argument(
        "--calc",
        default="normal",
        help=_calc_help(),
    )
    m.add_argument("--gamma", type=finite_float, help=_param_help("gamma"))
    m.add_argument("--seed", type=whole_number, help=_param_help("seed", "; also elemental R/U/X"))
    m.add_argument("--elemental", help='elemental rules, "Blocks:Elements:Ratio, …"')
    m.add_argument("--include", help='merge only these: blocks, VAE, Adjust, key substrings ("OUT03 attn2")')
    m.add_argument("--exclude", help="merge all but these (same words as --include)")
    m.add_argument("--adjust", help='"IN,OUT,OUT2,CONT,BRI,COL1,COL2,COL3" after the merge')
    m.add_argument("--models", nargs="+", help="further models of a modern or N-model method (--a is the base)")
    m.add_argument("--method", help=_names_help("method", "a modern or N-model method: "))
    m.add_argument(
        "--param",
        action="append",
        default=[],
        metavar="NAME=VALUE",
        help="a parameter of the --method, by its name (see `methods`); --NAME VALUE is the same:"
        " --param density=0.3 or --density 0.3, --param sign=mean, --param weights=1,0.5 (one per model)",
    )
    m.add_argument("--blocks", help='alpha as a block vector: "IN00=0.3 OUT05-OUT11=1 *=0.5" or 26/20 values')
    m.add_argument("--beta-blocks", help="beta as a block vector, same forms as --blocks (triple_sum, sum_twice)")
    m.add_argument("--preset", help="alpha as a block-weight preset name")
    save_dtype_options(m, "default: a recipe's cast(…), else fp16")
    m.add_argument("--device", default="cpu", help="compute on: cpu (default), cuda, cuda:N or mps")
    m.add_argument("--threads", type=whole_number)
    m.add_argument("-o", "--output", help="output file: .safetensors (or .ckpt)")
    m.add_argument("--overwrite", action="store_true", help="replace an existing output file")
    m.add_argument("--no-prune", action="store_true", help="keep EMA, schedule buffers and extra keys of A")
    m.add_argument("--no-metadata", action="store_true")
    m.add_argument(
        "--format", choices=["safetensors", "ckpt"], help="default: by the ending of -o (.ckpt/.pt: ckpt); must agree"
    )
    m.add_argument(
        "--layout",
        choices=list(LAYOUTS),
        help="Flux: the key names to write (default: the inputs' own; inputs in different layouts need it)",
    )
    m.add_argument("--nonfinite", default="error", choices=["error", "keep_a", "ignore"])
    m.add_argument("--print-recipe", action="store_true", help="print the canonical recipe and exit")
    m.add_argument(
        "--print-changes",
        action="store_true",
        help="list every key whose alpha an elemental entry overrides (key  slot  old → new  (entry n))",
    )
    m.add_argument("--changes-csv", metavar="FILE", help="write that list as CSV")

    m.add_argument("--rebasin", action="store_true", help="align B (and C) to A by exact permutations first")
    m.add_argument("--max-sweeps", type=whole_number, help="re-basin's cap on matching sweeps (default 10)")
    m.add_argument("--no-history", action="store_true", help="do not log this merge in history.csv")
    return m


def _explain_command(sub) -> None:
    ex = sub.add_parser(
        "explain", help="the block weights that best explain model M as a merge of A and B (and C): a least-squares fit"
    )
    ex.add_argument("m", help="the model to explain")
    ex.add_argument("--a", required=True, help="candidate parent A (the primary)")
    ex.add_argument("--b", required=True, help="candidate parent B")
    ex.add_argument("--c", help="candidate parent C: also fit the add difference A + alpha·(B − C)")
    ex.add_argument(
        "--mode",
        default="auto",
        choices=["auto", "weighted_sum", "add_difference", "ws", "add"],
        help="auto (default): weighted sum, or with --c the better explained of both",
    )
    ex.add_argument("--json", action="store_true", help="one JSON object: mode, explained, blocks, recipe, …")
    ex.add_argument("--recipe", dest="recipe_out", metavar="FILE", help="also write the fitted recipe to FILE")
    ex.add_argument("--chart", metavar="PNG", help="also draw the fitted block weights to PNG")
    ex.add_argument("--overwrite", action="store_true", help="replace an existing --recipe or --chart file")


def _rebasin_command(sub) -> None:
    rb = sub.add_parser(
        "rebasin", help="align B's hidden units to A's by exact permutations; write π(B), or merge it with A"
    )
    rb.add_argument("--a", required=True, help="the reference model")
    rb.add_argument("--b", required=True, help="the model whose units are reordered")
    rb.add_argument("--alpha", type=finite_float, help="write (1 − alpha)·A + alpha·π(B) instead of π(B)")
    rb.add_argument("--max-sweeps", type=whole_number, help="cap on matching sweeps (default 10)")
    rb.add_argument(
        "--self-check",
        action="store_true",
        help="first check that every permutation group leaves real-layout blocks unchanged and that A matched "
        "to itself stays unpermuted (one more matching pass); refuse to run if not",
    )
    rb.add_argument("-o", "--output", help="output .safetensors file")
    save_dtype_options(rb, "default: fp16")
    rb.add_argument("--device", default="cpu", help="where the matching products and the merge run")
    rb.add_argument("--threads", type=whole_number)
    rb.add_argument("--overwrite", action="store_true", help="replace an existing output file")
    rb.add_argument("--no-history", action="store_true", help="do not log this merge in history.csv")


def _history_command(sub) -> None:
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


def _other_commands(sub) -> None:
    """recipe, inspect, info, methods, ui, clean, xyz, synth."""
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
    i.add_argument("--fingerprint", action="store_true", help="also the fingerprints (reads every tensor)")

    n = sub.add_parser("info", help="architectures and block schemas; or detection results for a file")
    n.add_argument("target", nargs="?", help="an architecture id or a checkpoint file")
    n.add_argument("-v", "--verbose", action="store_true", help="list the keys of every block")
    sub.add_parser("methods", help="every merge method and calc mode with its inputs and parameters")

    u = sub.add_parser("ui", help="the Alloy tabs in a browser, without the WebUI (merges go to files)")
    u.add_argument("--host", default="127.0.0.1", help="address to bind (another than 127.0.0.1 needs --auth)")
    u.add_argument("--port", type=whole_number, default=7870)
    u.add_argument("--auth", metavar="USER:PASS", help="HTTP Basic credentials for the page and the HTTP API")
    u.add_argument("--insecure", action="store_true", help="bind another address without --auth anyway")
    u.add_argument("--device", default="cpu", help="merge, match and extract LoRAs on: cpu, cuda, cuda:N or mps")

    c = sub.add_parser("clean", help="remove temporary files that killed merges left behind")
    c.add_argument("folder", nargs="?", help="default: --models-dir, $ALLOY_MODELS_DIR or the current folder")

    x = sub.add_parser("xyz", help="an XYZ plot plan (JSON): check it and print its cells")
    x.add_argument("plan", help="plan JSON: x/y/z axes {type, values}, merge settings, gen overrides, dice")
    x.add_argument("--host", choices=["none"], default="none", help="none: a dry run that prints the cells")
    x.add_argument("--schema", help="block schema (sd1, sdxl, flux…); default: detected from model A")

    xr = sub.add_parser("xyz-run", help="xyz run --webui URL … PLAN -o GRID.png: an XYZ plot fanned out over "
                        "running WebUIs, one merge group per WebUI at a time, the grid assembled here")  # fmt: skip
    xr.add_argument("plan", help="plan JSON (as for POST /alloy/v1/xyz)")
    xr.add_argument("--webui", action="append", required=True, metavar="URL", help="a running WebUI; repeat for more")
    xr.add_argument("--auth", default="", metavar="USER:PASSWORD", help="the WebUIs' --api-auth")
    xr.add_argument("-o", "--output", required=True, help="the grid (.png); more grids get -2, -3 … before .png")
    xr.add_argument("--overwrite", action="store_true")

    s = sub.add_parser("synth", help="write a random-weight checkpoint with an architecture's real keys")
    s.add_argument("arch", choices=[a for a, arch in ARCHITECTURES.items() if arch.data_file])
    s.add_argument("output")
    s.add_argument("--variant", default="", help="a named variant: schnell (Flux), 3.5-medium (sd3)")
    s.add_argument("--layout", default="single-file", choices=list(LAYOUTS), help="Flux and Chroma: the key names")
    s.add_argument("--components", help="comma-separated components to write (default: all), e.g. diffuser,vae")
    s.add_argument("--scale", type=whole_number, default=32, help="divide large dimensions by this (1 = full size)")
    s.add_argument("--seed", type=whole_number, default=0)
    s.add_argument(
        "--channels", type=int, choices=[4, 8, 9], default=4, help="UNet input channels (9 = inpainting, 8 = pix2pix)"
    )
    s.add_argument("--dtype", default="fp16", choices=["fp16", "bf16", "fp32"])
    s.add_argument("--overwrite", action="store_true")
