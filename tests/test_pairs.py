"""A person's pairs: each new trial meets the best of the trials before it, chosen from every answer before its
pair, so a trial made while the previous pair is still open meets that pair's winner, and the pairs are the same
however fast the person answers."""

from __future__ import annotations

import optuna
import pytest

from lib_merge.app.optimize.human import pair_book, pair_json
from lib_merge.app.optimize.preference import best, fit_utilities


def _study(trials: int):
    study = optuna.create_study(direction="maximize")
    for _ in range(trials):
        study.add_trial(optuna.trial.create_trial(params={}, distributions={}, value=0.0))
    return study


def _newer_always_wins(answer_before_next_trial: bool) -> list[tuple[int, int]]:
    """Trials 1…4 each paired as they finish; the person picks the newer trial every time, either at once or
    only after the next trial has been made (the study runs one pair ahead)."""
    study = _study(5)
    book = pair_book(study)
    for new in range(1, 5):
        book.add(new)
        while len(book.pending()) > (0 if answer_before_next_trial else 1):
            book.answer(book.pending()[0].id, "left")
    while book.pending():
        book.answer(book.pending()[0].id, "left")
    return [(p.left, p.right) for p in book.all()]


@pytest.mark.parametrize("answer_before_next_trial", [True, False])
def test_each_new_trial_meets_the_winner_of_the_pair_before_it(answer_before_next_trial):
    pairs = _newer_always_wins(answer_before_next_trial)
    assert pairs == [(1, 0), (2, 1), (3, 2), (4, 3)]
    study = _study(5)
    book = pair_book(study)
    for new in range(1, 5):
        book.add(new)
    for _ in range(4):
        book.answer(book.pending()[0].id, "left")
    assert best(fit_utilities(list(range(5)), book.all())) == 4  # the newer won every pair: the last is best


def test_the_open_pair_shown_has_its_opponent_and_a_later_one_waits_for_it(tmp_path):
    study = _study(3)
    book = pair_book(study)
    first, second = book.add(1), book.add(2)
    assert (first.right, second.right) == (0, None)  # trial 2's opponent waits for the answer to (1, 0)
    plan = type("Plan", (), {"image_folder": lambda self: str(tmp_path)})()
    shown = pair_json(book, plan, "")
    assert (shown["pair_id"], shown["left"]["trial"], shown["right"]["trial"]) == (first.id, 1, 0)
    book.answer(first.id, "right")  # the older trial won: trial 2 meets trial 0
    assert [(p.left, p.right) for p in book.pending()] == [(2, 0)]
    assert [(p.left, p.right) for p in pair_book(study).pending()] == [(2, 0)]  # stored: a resumed study reads it
