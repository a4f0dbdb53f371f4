"""How well a study scored by a person's choices finds a known optimum, beside a scorer-driven study and
random search in the same run (median over seeds of the reported best trial's distance from the target).

    python bench/optimize_human.py [--seeds 12] [--trials 24 40] [--regularisation 0.001] [--opponent best]

Three inputs in [0, 1] (two that matter, one that does not, like a block vector's "rest"); the target is
(0.73, 0.25); distance = L1 over the two. The simulated person always picks the trial nearer the target.
"person" runs Alloy's own fit, pairing and proposal (lib_merge.app.optimize.preference) as a study does,
each proposal made before the latest pair is answered (the study runs one pair ahead of the person);
"scorer" is TPE told the distance itself; "random" the best of as many uniform draws. `--opponent uncertain`
pairs each new trial with the trial of highest utility + one standard error instead of the best, and
`--regularisation` sets the Bradley-Terry prior, to compare the choices made in preference.py.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import warnings
from pathlib import Path
from types import SimpleNamespace

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from lib_merge.app.optimize import preference  # noqa: E402
from lib_merge.app.optimize.pairs import Pair  # noqa: E402
from lib_merge.app.optimize.samplers import make_sampler  # noqa: E402
from lib_merge.app.optimize.space import parse_space  # noqa: E402

TARGET = (0.73, 0.25)
SPACE = parse_space({"x": {"low": 0, "high": 1}, "y": {"low": 0, "high": 1}, "rest": {"low": 0, "high": 1}})


def distance(params: dict) -> float:
    return abs(params["x"] - TARGET[0]) + abs(params["y"] - TARGET[1])


def by_person(seed: int, trials: int, opponent_rule: str) -> float:
    import optuna

    plan = SimpleNamespace(request=SimpleNamespace(sampler="tpe", seed=seed), space=SPACE, schema=None)
    study = optuna.create_study(direction="maximize", sampler=make_sampler("tpe", seed, SPACE, None))
    pairs: list[Pair] = []
    for number in range(trials):
        trial = study.ask()
        SPACE.suggest(trial, None)
        study.tell(trial, 0.0)
        done = [t for t in study.trials if t.state.name == "COMPLETE"]
        if len(done) < 2:
            continue
        utilities = preference.fit_utilities([t.number for t in done], pairs)
        if opponent_rule == "best":
            rival = preference.opponent(number, utilities)
        else:
            rival = max((n for n in utilities if n != number), key=lambda n: utilities[n].value + utilities[n].error)
        # The proposal comes before this pair is answered (one pair ahead), then the person answers it.
        answered = preference.fit_utilities([t.number for t in done], pairs)
        study.enqueue_trial(preference.propose(plan, done, answered, seed * 100_003 + number))
        nearer = distance(done[number].params) < distance(done[rival].params)
        pairs.append(Pair(str(number), number, rival, "left" if nearer else "right"))
    utilities = preference.fit_utilities([t.number for t in study.trials], pairs)
    return distance(study.trials[preference.best(utilities)].params)


def by_scorer(seed: int, trials: int) -> float:
    import optuna

    study = optuna.create_study(direction="maximize", sampler=make_sampler("tpe", seed, SPACE, None))

    def objective(trial) -> float:
        SPACE.suggest(trial, None)
        return -distance(trial.params)

    study.optimize(objective, n_trials=trials)
    return distance(study.best_trial.params)


def by_random(seed: int, trials: int) -> float:
    draws = np.random.default_rng(seed).random((trials, 3))
    return min(distance({"x": x, "y": y}) for x, y, _ in draws)


def main() -> None:
    import optuna

    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--seeds", type=int, default=12)
    ap.add_argument("--trials", type=int, nargs="+", default=[24, 40])
    ap.add_argument("--regularisation", type=float, default=preference.REGULARISATION)
    ap.add_argument("--opponent", choices=["best", "uncertain"], default="best")
    args = ap.parse_args()
    optuna.logging.set_verbosity(optuna.logging.ERROR)
    warnings.filterwarnings("ignore")
    preference.REGULARISATION = args.regularisation
    print(f"regularisation {args.regularisation}, opponent {args.opponent}, {args.seeds} seeds; "
          "median distance of the reported best from the target (max in brackets)")  # fmt: skip
    for trials in args.trials:
        row = {}
        for name, run in (("scorer", by_scorer), ("person", by_person), ("random", by_random)):
            extra = (args.opponent,) if name == "person" else ()
            found = [run(seed, trials, *extra) for seed in range(args.seeds)]
            row[name] = f"{statistics.median(found):.3f} ({max(found):.3f})"
        print(f"{trials} trials: " + ", ".join(f"{k} {v}" for k, v in row.items()))


if __name__ == "__main__":
    main()
