"""Dice: random block weights, reproducible from one seed with numpy's Generator.

A roll resolves letters to numbers; the numbers go into the recipe, the seed and the texts into
the history settings. E-tokens leave the slot at 0 and add a per-key elemental entry instead.
"""

from __future__ import annotations

import csv
import io
import re
import secrets
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

from lib_merge.arch.blocks import SCHEMAS, BlockSchema
from lib_merge.errors import ParameterError
from lib_merge.io.tempfiles import write_text
from lib_merge.methods import get_method
from lib_merge.recipe.elemental import parse_elemental
from lib_merge.recipe.form import method_for
from lib_merge.recipe.vectors import format_number

MODES = ("off", "R", "U", "X", "D", "ER", "EU", "EX", "custom")
LETTERS = ("R", "U", "X", "D", "ER", "EU", "EX")
DEFAULT_CUSTOM = "U," + ",".join(["0"] * 12) + "," + ",".join(["R"] * 13)
_PROBABILITY = re.compile(r"^([-+]?\d*\.?\d+)R([-+]?\d*\.?\d+)$")


@dataclass
class DiceSettings:
    mode: str = "R"
    custom: str = DEFAULT_CUSTOM  # numbers or letters per slot (mode "custom")
    target: str = "alpha"  # alpha, beta or both
    upper: str = ""  # u per slot: one number or a vector (empty: 1)
    lower: str = ""  # l per slot: one number, "0.3R0.7" or a vector (empty: 0)
    clamp_max: str = ""  # U_d: one number or a vector (empty: no clamp)
    clamp_min: str = ""  # L_d
    round: int = 3
    seed: int = -1
    rolls: int = 1
    extended: bool = False  # SDXL: the 110 slots of the extended schema

    def as_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict) -> DiceSettings:
        known = {k: v for k, v in (data or {}).items() if k in cls.__dataclass_fields__}
        return cls(**known)


@dataclass
class DiceRoll:
    seed: int
    alpha: list[float] | None
    beta: list[float] | None
    elemental: list[str] = field(default_factory=list)  # "<slot>::R" entries of E-tokens

    def blocks_text(self, values: list[float] | None) -> str | None:
        return None if values is None else ",".join(format_number(v) for v in values)


def dice_slots(schema: BlockSchema, extended: bool) -> tuple[str, ...]:
    """The slots Dice fills: the schema's, or SDXL's 110 extended slots (VAE last)."""
    if extended and schema.fine:
        return SCHEMAS[schema.fine].names_with_vae()
    return schema.slots


def fresh_seed() -> int:
    return secrets.randbits(31)


def _per_slot(text: str, slots: tuple[str, ...], name: str, default: str | None) -> list[str | None]:
    items = [t.strip() for t in str(text or "").split(",")] if str(text or "").strip() else []
    if not items:
        return [default] * len(slots)
    if len(items) == 1:
        return items * len(slots)
    if len(items) != len(slots):
        raise ParameterError(f"Dice {name}: {len(items)} values given; give one, or {len(slots)} (one per slot)")
    return items


def _number(text: str, what: str) -> float:
    try:
        return float(text)
    except ValueError:
        raise ParameterError(f"Dice {what}: {text!r} is not a number") from None


def _tokens(settings: DiceSettings, slots: tuple[str, ...]) -> list[str]:
    if settings.mode == "custom":
        tokens = _per_slot(settings.custom, slots, "custom vector", None)
        for slot, token in zip(slots, tokens, strict=True):
            if token not in LETTERS:
                _number(token, f"custom vector at {slot}")
        return tokens  # type: ignore[return-value]
    if settings.mode not in LETTERS:
        raise ParameterError(f"Dice mode {settings.mode!r}; modes: {', '.join(MODES)}")
    return [settings.mode] * len(slots)


def _vector(settings: DiceSettings, slots: tuple[str, ...], rng: np.random.Generator, elemental: list[str]) -> list:
    tokens = _tokens(settings, slots)
    uppers = _per_slot(settings.upper, slots, "upper limit u", "1")
    lowers = _per_slot(settings.lower, slots, "lower limit l", "0")
    highs = _per_slot(settings.clamp_max, slots, "clamp max", None)
    lows = _per_slot(settings.clamp_min, slots, "clamp min", None)
    values = []
    for slot, token, u_text, l_text, high, low in zip(slots, tokens, uppers, lowers, highs, lows, strict=True):
        r = float(rng.random())
        u = _number(u_text, f"u at {slot}")
        chance = _PROBABILITY.match(l_text or "")
        if chance:  # "0.3R0.7": with probability 0.7 l = 0.3, else u = l = 0 (its own draw, right after)
            if float(rng.random()) < float(chance.group(2)):
                low_limit = float(chance.group(1))
            else:
                u, low_limit = 0.0, 0.0
        else:
            low_limit = _number(l_text, f"l at {slot}")
        if token == "R":
            value = r
        elif token == "U":
            value = 1.5 - 2 * r
        elif token == "X":
            value = (low_limit - u) * r + u
        elif token == "D":
            value = u + low_limit * (r - 0.5)
        elif token in ("ER", "EU", "EX"):
            value = 0.0
            elemental.append(f"{slot}::{token[1]}")
        else:
            value = float(token)
        if high is not None:
            value = min(value, _number(high, f"clamp max at {slot}"))
        if low is not None:
            value = max(value, _number(low, f"clamp min at {slot}"))
        values.append(round(value, int(settings.round)))
    return values


def roll(settings: DiceSettings, schema: BlockSchema, seed: int) -> DiceRoll:
    """One draw: the α vector first (one draw per slot in schema order), then β."""
    if settings.target not in ("alpha", "beta", "both"):
        raise ParameterError(f"Dice target {settings.target!r}; use alpha, beta or both")
    slots = dice_slots(schema, settings.extended)
    rng = np.random.default_rng(seed)
    elemental: list[str] = []
    alpha = _vector(settings, slots, rng, elemental) if settings.target in ("alpha", "both") else None
    beta = _vector(settings, slots, rng, elemental) if settings.target in ("beta", "both") else None
    return DiceRoll(seed, alpha, beta, elemental)


def roll_seeds(settings: DiceSettings, count: int) -> list[int]:
    """Seed of each roll: base + index, or a fresh seed per roll when the base is -1."""
    if settings.seed == -1:
        return [fresh_seed() for _ in range(count)]
    return [int(settings.seed) + i for i in range(count)]


@dataclass
class ElistInput:
    """What the E-list needs of one merge: A's keys, the schema, the vectors and rules used."""

    keys: list[str]
    schema: BlockSchema
    alpha: list[float]
    beta: list[float] | None
    elemental: str
    seed: int


def elist_rows(data: ElistInput) -> list[tuple[str, str, float, float | str]]:
    """(key, slot, α, β) per key in a block, after block weights and elemental."""
    fine = SCHEMAS[data.schema.fine] if data.schema.fine else None
    extended = len(data.alpha) == len(fine.names_with_vae()) if fine else False
    slot_names = fine.names_with_vae() if extended and fine else data.schema.names_with_vae()
    rules = parse_elemental(data.elemental, data.seed) if data.elemental.strip() else None
    if rules is not None:
        rules = rules.bind(data.schema.slots, data.schema.label, fine.slots if fine else ())
    rows = []
    for key in data.keys:
        slot = data.schema.slot_of(key)
        if slot is None:
            continue
        fine_slot = fine.slot_of(key) if fine else None
        own = fine_slot if extended and fine_slot else slot
        if own not in slot_names:
            continue
        alpha = _slot_value(data.alpha, slot_names, own)
        beta: float | str = _slot_value(data.beta, slot_names, own) if data.beta else ""
        if rules is not None:
            alpha = rules.alpha_for(key, {slot, fine_slot} - {None}, alpha)
        rows.append((key, own, alpha, beta))
    return rows


def _slot_value(values: list[float], names: tuple[str, ...], slot: str) -> float:
    """A slot's value; the VAE follows the first slot when the vector has no VAE value."""
    index = names.index(slot)
    return values[index] if index < len(values) else values[0]


def write_elist(folder: Path, history_id: int, rows: list[tuple]) -> Path:
    """`<folder>/<history id>.csv`, written to a temporary file first."""
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"{history_id}.csv"
    buf = io.StringIO()
    writer = csv.writer(buf, quoting=csv.QUOTE_NONNUMERIC, lineterminator="\r\n")
    writer.writerow(["key", "slot", "alpha", "beta"])
    writer.writerows(rows)
    write_text(str(path), buf.getvalue())
    return path


def elist_for_settings(settings: dict, model_a_path: str, folder: Path, history_id: int) -> Path:
    """The E-list of a logged merge: A's keys with the α/β its block weights and elemental gave them."""
    from lib_merge.arch.blocks import schema_for
    from lib_merge.io.source import SourceModel
    from lib_merge.recipe import parse_vector

    source = SourceModel(model_a_path)
    try:
        schema = schema_for(source.arch.id)
        keys = list(source.keys)
    finally:
        source.close()
    if schema is None:
        raise ParameterError(f"{model_a_path}: no block schema for {source.arch.label}")

    def vector(text: str | None, scalar: float | None) -> list[float] | None:
        if not text:
            return None if scalar is None else [float(scalar)] * len(schema)
        parsed = parse_vector(text, schema, default=scalar).vector
        target = SCHEMAS[parsed.schema_id]
        return [parsed.value(target, s) for s in target.names_with_vae()]

    method = get_method(method_for(settings.get("mode") or "weighted_sum", settings.get("calc") or "normal"))

    def given_or_default(name: str) -> float | None:  # the method's own default, as the merge used it
        if settings.get(name) is not None:
            return settings[name]
        return float(method.param(name).default) if method.takes(name) else None

    alpha = vector(settings.get("blocks"), given_or_default("alpha"))
    beta = vector(settings.get("beta_blocks"), given_or_default("beta"))
    rules, seed = str(settings.get("elemental") or ""), int(settings.get("seed") or 0)
    data = ElistInput(keys, schema, alpha or [], beta, rules, seed)
    return write_elist(folder, history_id, elist_rows(data))
