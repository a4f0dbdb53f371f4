"""A study scored by a person: each finished trial is paired with the best trial, the study waits while more
than one pair is unanswered, and the next trial's inputs come from the choices.

The study thread calls `pair_new` and `wait_and_queue`; the desk answers the surfaces from theirs."""

from __future__ import annotations

import base64
import os
import threading
from dataclasses import dataclass, field

from lib_merge.app.optimize.pairs import Pair, PairBook
from lib_merge.app.optimize.preference import Utility, fit_utilities, opponent, propose
from lib_merge.app.optimize.request import StudyPlan, trial_folder

AHEAD = 1  # unanswered pairs while the next trial generates: the person is not kept waiting


@dataclass
class HumanPacer:
    plan: StudyPlan
    book: PairBook
    stop: threading.Event
    changed: threading.Condition = field(default_factory=threading.Condition)
    generating: int | None = None  # the trial being made now, for "pair": null answers

    def pair_new(self, study, trial) -> str | None:
        """The new trial's pair (once a finished trial comes before it): its id. Its opponent is chosen when
        the pairs before it are answered."""
        self.generating = None
        if trial.state.name != "COMPLETE" or not any(t.number < trial.number for t in _complete(study)):
            return None
        return self.book.add(trial.number).id

    def wait_for_answers(self, open_pairs: int = 0) -> None:
        """The study pauses here until at most `open_pairs` pairs are unanswered, or it is stopped."""
        with self.changed:
            while len(self.book.pending()) > open_pairs and not self.stop.is_set():
                self.changed.wait(1.0)

    def wait_and_queue(self, study, newest: str | None = None) -> None:
        """Wait (the study pauses) while more than AHEAD pairs are unanswered, then queue the inputs the
        sampler proposes from the choices so far (the first two trials are drawn at random). The newest
        pair is left out even when answered already, so the same seed and the same choices give the same
        trials however fast the person answers."""
        self.wait_for_answers(AHEAD)
        if self.stop.is_set() or any(t.state.name == "WAITING" for t in study.get_trials(deepcopy=False)):
            return
        self.fit(study)  # every answer, for the study's readers
        numbers = [t.number for t in _complete(study)]
        utilities = fit_utilities(numbers, [p for p in self.book.all() if p.id != newest])
        if len(utilities) >= 2:
            seed = (self.plan.request.seed + len(study.get_trials(deepcopy=False))) % 2**32
            study.enqueue_trial(propose(self.plan, _complete(study), utilities, seed))

    def fit(self, study) -> dict[int, Utility]:
        """The utilities of the finished trials from every answer so far, kept in the study for its readers."""
        utilities = fit_utilities([t.number for t in _complete(study)], self.book.all())
        study.set_user_attr("utilities", {str(n): [u.value, u.error] for n, u in utilities.items()})
        return utilities

    def chosen(self) -> None:
        with self.changed:
            self.changed.notify_all()


def pair_book(study) -> PairBook:
    """The study's pairs, each new trial meeting the best of the trials before it."""

    def opponent_of(new: int, pairs: list[Pair]) -> int:
        return opponent(new, fit_utilities([t.number for t in _complete(study) if t.number < new], pairs))

    return PairBook(study, opponent_of)


def pair_json(book: PairBook, plan: StudyPlan, reason: str, files: bool = False) -> dict:
    """The oldest unanswered pair with both trials' images (base64 PNG; `files`: their paths), or `reason`
    when there is none."""
    pending = book.pending()
    if not pending:
        return {"pair": None, "reason": reason}
    pair = pending[0]
    trials = {t.number: t for t in book.study.get_trials(deepcopy=False)}

    def side(number: int) -> dict:
        folder = trial_folder(plan.image_folder(), number)
        names = sorted(os.listdir(folder)) if os.path.isdir(folder) else []
        paths = [os.path.join(folder, name) for name in names if name.endswith(".png")]
        images = paths if files else [_png_base64(path) for path in paths]
        return {"trial": number, "params": trials[number].params if number in trials else {}, "images": images}

    return {"pair_id": pair.id, "left": side(pair.left), "right": side(pair.right), "pending": len(pending)}


def _png_base64(path: str) -> str:
    with open(path, "rb") as f:
        return base64.b64encode(f.read()).decode("ascii")


def _complete(study) -> list:
    return [t for t in study.get_trials(deepcopy=False) if t.state.name == "COMPLETE"]
