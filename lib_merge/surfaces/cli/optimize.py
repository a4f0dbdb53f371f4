"""`optimize run --webui URL [--webui URL …] --storage URL --study NAME --plan FILE`: a study over running
WebUIs, scored here; `optimize show --storage URL --study NAME [--json]`: a study's trials, best and report.

The plan file is the body of POST /alloy/v1/optimize (recipe, space, trials, sampler, seed, scorer, gen);
--study and --storage name the study. A study that does not reach its trials (a WebUI failed) exits 1.
"""

from __future__ import annotations

import json
import sys

from lib_merge.errors import ParameterError


def optimize_commands(sub) -> None:
    op = sub.add_parser("optimize", help="studies over running WebUIs: run one, show one")
    osub = op.add_subparsers(dest="optimize_command", required=True, parser_class=type(op))
    run = osub.add_parser("run", help="run a study on several running WebUIs through their HTTP API")
    run.add_argument("--webui", action="append", required=True, metavar="URL",
                     help="a running WebUI (with --api), e.g. http://127.0.0.1:7860; repeat for more")  # fmt: skip
    run.add_argument("--auth", default="", metavar="USER:PASSWORD", help="the WebUIs' --api-auth")
    run.add_argument("--storage", default="", help="the study's storage URL (PostgreSQL for several machines; "
                     "default: the SQLite file in the user-data folder)")  # fmt: skip
    run.add_argument("--study", required=True, help="the study's name (running it again resumes it)")
    run.add_argument("--plan", required=True, metavar="FILE", help="the body of POST /alloy/v1/optimize (JSON)")
    run.add_argument("--json", action="store_true", help="print the study as GET /alloy/v1/optimize/{study} does")
    show = osub.add_parser("show", help="a study's trials, best and report")
    show.add_argument("--storage", default="", help="the study's storage URL (default: the user-data SQLite file)")
    show.add_argument("--study", required=True)
    show.add_argument("--json", action="store_true")


def cmd_optimize(args) -> int:
    if args.optimize_command == "show":
        return _show(args)
    return _run(args)


def _run(args) -> int:
    from lib_merge.app.history import history_file
    from lib_merge.app.optimize.builtin import BUILTIN_SCORERS, ScorerSettings
    from lib_merge.app.optimize.remote import WebUIClient, drive_study
    from lib_merge.surfaces.http_optimize import study_request

    body = _plan_body(args.plan)
    body.update(study=args.study, storage=args.storage)
    body.pop("wait", None)
    try:
        request, _ = study_request(body)
    except ValueError as e:
        raise ParameterError(f"{args.plan}: {e}") from None
    clients = [WebUIClient(url, args.auth) for url in args.webui]

    def heard(instance: str, trial) -> None:
        values = ", ".join(f"{v:.4g}" for v in trial.values) if trial.values else trial.state.name.lower()
        print(f"trial {trial.number} ({instance}): {values} {json.dumps(trial.params, sort_keys=True)}",
              file=sys.stderr, flush=True)  # fmt: skip

    answer = drive_study(request, clients, history_file(), BUILTIN_SCORERS, ScorerSettings.default(), heard)
    _print(answer, args.json)
    return 0 if answer["state"] == "done" else 1


def _show(args) -> int:
    from lib_merge.app.optimize.request import check_storage, check_study_name
    from lib_merge.app.optimize.runner import stored_state
    from lib_merge.app.optimize.study import load_study, study_json

    study = load_study(check_study_name(args.study), check_storage(args.storage))
    answer = study_json(study)
    answer["state"] = stored_state(study)
    _print(answer, args.json)
    return 0


def _plan_body(path: str) -> dict:
    try:
        with open(path, encoding="utf-8") as f:
            body = json.load(f)
    except FileNotFoundError:
        raise ParameterError(f"{path}: no such plan file") from None
    except (OSError, UnicodeDecodeError, ValueError) as e:
        raise ParameterError(f"{path}: not a JSON plan ({type(e).__name__}: {e})") from None
    if not isinstance(body, dict):
        raise ParameterError(f"{path}: a plan is a JSON object (the body of POST /alloy/v1/optimize)")
    return body


def _print(answer: dict, as_json: bool) -> None:
    if as_json:
        print(json.dumps(answer, indent=1, ensure_ascii=False))
        return
    print("trial\tstate\tvalues\tinstance\tparams")
    for t in answer["trials"]:
        values = ", ".join(f"{v:.4g}" for v in t["values"]) if t["values"] else ""
        params = json.dumps(t["params"], sort_keys=True)
        print(f"{t['number']}\t{t['state']}\t{values}\t{t.get('instance') or ''}\t{params}")
    print(f"study {answer['study']}: {answer['state']}; best trial(s): {', '.join(map(str, answer['best'])) or 'none'}")
    for url, error in (answer.get("errors") or {}).items():
        print(f"{url}: {error}")
    report = answer.get("report") or {}
    for scorer, entry in (report.get("objectives") or {}).items():
        figures = ", ".join(f"{m} {entry[m]['mean']:.4g}" for m in ("best", "A", "B") if m in entry)
        print(f"held-out seeds, {scorer}: {figures}; beats both: {entry.get('beats_both')}")
