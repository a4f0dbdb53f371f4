"""The pairs a person is shown in a study scored by "human", and their answers. They are kept in the study's
storage (a study attribute), so a restarted WebUI shows the same pending pair and fits the same choices."""

from __future__ import annotations

import secrets
import threading
from collections.abc import Callable
from dataclasses import asdict, dataclass

from lib_merge.errors import ParameterError

WINNERS = ("left", "right", "tie", "skip")


@dataclass
class Pair:
    id: str
    left: int  # trial numbers; the left one is the newer trial
    right: int | None  # None until every earlier pair is answered: then the best of the trials before `left`
    winner: str | None = None  # one of WINNERS once answered


class PairBook:
    """One study's pairs; one book per study in a process, so its lock orders the choices and new pairs.

    A new trial's opponent is chosen when the person reaches its pair, from every answer before it
    (`opponent_of(new trial, pairs)`): a trial made while the previous pair was still open then meets the
    winner of that pair, and the pairs depend on the choices alone, not on how fast they came."""

    def __init__(self, study, opponent_of: Callable[[int, list[Pair]], int]) -> None:
        self.study = study
        self.opponent_of = opponent_of
        self._lock = threading.Lock()
        if "pairs" not in study.user_attrs:  # marks the study as scored by a person from its start
            self._write([])

    def all(self) -> list[Pair]:
        return [Pair(**p) for p in self.study.user_attrs.get("pairs", [])]

    def pending(self) -> list[Pair]:
        return [p for p in self.all() if p.winner is None]

    def add(self, left: int) -> Pair:
        """The new trial's pair; its opponent waits for the answers to the pairs before it."""
        with self._lock:
            pair = Pair(secrets.token_hex(6), left, None)
            self._write([*self.all(), pair])
            return pair

    def answer(self, pair_id: object, winner: object) -> Pair:
        """The person's choice; an unknown pair, an answered one or another word is refused."""
        if winner not in WINNERS:
            raise ParameterError(f"winner must be one of {', '.join(WINNERS)}, not {winner!r}")
        if not isinstance(pair_id, str):
            raise ParameterError(f"pair_id must be the text GET …/pair gave, not {pair_id!r}")
        with self._lock:
            pairs = self.all()
            pair = next((p for p in pairs if p.id == pair_id), None)
            if pair is None:
                raise ParameterError(f"no pair {pair_id[:40]!r} in the study {self.study.study_name}")
            if pair.winner is not None:
                raise ParameterError(f"the pair {pair_id} was answered already ({pair.winner})")
            pair.winner = winner
            self._write(pairs)
            return pair

    def _write(self, pairs: list[Pair]) -> None:
        """Stores the pairs, the first open one with its opponent (in one write, so no reader sees it without)."""
        first_open = next((p for p in pairs if p.winner is None), None)
        if first_open is not None and first_open.right is None:
            first_open.right = self.opponent_of(first_open.left, pairs)
        self.study.set_user_attr("pairs", [asdict(p) for p in pairs])
