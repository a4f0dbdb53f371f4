"""Hostile recipes: every limit has its one clear error, and a seeded fuzz run shows that parsing
raises nothing but RecipeError and takes well under a second per case, whatever the text."""

from __future__ import annotations

import random
import time

import pytest
from test_cli import cli, error_line

from lib_merge.errors import RecipeError
from lib_merge.methods import METHODS
from lib_merge.recipe import parse_recipe, print_recipe, read_recipe_file
from lib_merge.recipe.limits import MAX_MERGE_DEPTH, MAX_MERGES, MAX_MODELS, MAX_NESTING, MAX_RECIPE_BYTES

HEAD = "alloy-recipe 1\n"


def _refused(text: str, message: str) -> None:
    """Refused with its message, and at once: this thread's CPU time (not the wall clock, which other
    processes on a loaded machine stretch) stays under a second; a blow-up would take minutes."""
    started = time.thread_time()
    with pytest.raises(RecipeError, match=message):
        parse_recipe(text)
    assert time.thread_time() - started < 1.0


def test_each_limit_has_its_own_clear_error():
    _refused(HEAD + "# " + "x" * MAX_RECIPE_BYTES, f"longer than {MAX_RECIPE_BYTES:,} bytes")
    _refused(HEAD + "a = 1\n" * 10_001, "10,001 statements; a recipe may have at most 10,000")
    _refused(HEAD + "m = " + "weighted_sum(" * 500 + 'model("a"), model("b")' + ")" * 500, "nested")
    _refused(HEAD + "m = " + "-" * 5000 + "1", f"nested too deeply \\(at most {MAX_NESTING} levels\\)")
    _refused(HEAD + "m = " + "-" * 20000 + "1", "nested too deeply")
    _refused(HEAD + "m = " + "[" * 60 + "]" * 60, f"nested too deeply \\(at most {MAX_NESTING} levels\\)")
    doubling = 'A = model("a")\nm0 = weighted_sum(A, A)\n' + "".join(
        f"m{i + 1} = weighted_sum(m{i}, m{i})\n" for i in range(40)
    )
    _refused(HEAD + doubling, f"more than {MAX_MERGES:,} merge steps")
    chain = 'A = model("a")\nm0 = weighted_sum(A, A)\n' + "".join(
        f"m{i + 1} = weighted_sum(m{i}, A)\n" for i in range(MAX_MERGE_DEPTH + 5)
    )
    _refused(HEAD + chain, f"nested more than {MAX_MERGE_DEPTH} deep")
    models = [f'model("m{i}")' for i in range(MAX_MODELS + 1)]
    wide = "".join(f"s{i} = n_average({', '.join(models[i : i + 16])})\n" for i in range(0, MAX_MODELS + 1, 16))
    wide += "m = n_average(" + ", ".join(f"s{i}" for i in range(0, MAX_MODELS + 1, 16)) + ")\n"
    _refused(HEAD + wide, f"more than {MAX_MODELS} models")
    _refused(HEAD + 'm = weighted_sum(model("a"), model("b"), alpha=1e999)\n', "line 2, col 48: inf is not a finite")
    _refused(HEAD + 'm = weighted_sum(model("a"), model("b"), alpha=' + "9" * 400 + ")\n", "not a finite number")
    _refused(HEAD + 'm = model("a\x00")\n', "line 2: character U\\+0000 is not allowed")


def test_real_sized_recipes_stay_far_below_the_limits():
    models = "".join(f'M{i} = model("m{i}.safetensors")\n' for i in range(17))
    vector = ", ".join(["0.5"] * 110)
    body = models + "a = ties(" + ", ".join(f"M{i}" for i in range(17)) + ", alpha=0.5, density=0.3)\n"
    previous = "a"
    for i in range(40):
        body += f"b{i} = weighted_sum({previous}, M{i % 17}, alpha=blocks([{vector}]))\n"
        previous = f"b{i}"
    assert len(body) < MAX_RECIPE_BYTES / 2
    parse_recipe(HEAD + body)  # 40 chained merges with extended vectors and a 17-model method


def test_recipe_files_must_be_utf8_and_small(tmp_path):
    bad = tmp_path / "bad.alloy"
    bad.write_bytes(HEAD.encode() + b'A = model("caf\xe9")\n')
    with pytest.raises(RecipeError, match=r"bad.alloy line 2, col 15: not UTF-8 text \(byte 0xe9\)"):
        read_recipe_file(str(bad))
    proc = cli("recipe", "print", bad)
    assert proc.returncode == 3 and "not UTF-8 text" in error_line(proc) and "Traceback" not in proc.stderr
    big = tmp_path / "big.alloy"
    big.write_bytes(HEAD.encode() + b"#" * (MAX_RECIPE_BYTES + 1))
    with pytest.raises(RecipeError, match="a recipe may have at most"):
        read_recipe_file(str(big))
    deep = tmp_path / "deep.alloy"
    deep.write_text(HEAD + "m = " + "weighted_sum(" * 500 + 'model("a"), model("b")' + ")" * 500)
    proc = cli("merge", deep, "-o", tmp_path / "o.safetensors")
    assert proc.returncode == 3 and "nested" in error_line(proc) and "Traceback" not in proc.stderr


# -- the fuzz run -------------------------------------------------------------------------------

_TOKENS = [
    "alloy-recipe 1\n", "A", "B", "m", " = ", "=", "model(", '"a.safetensors"', '"b"', ")", "(", ", ", "\n",
    "alpha=", "beta=", "seed=", "0.5", "-", "+", "1e999", "-1e308", "99999999999999999999", "[", "]", "blocks(",
    "preset(", "param(", "elemental(", "include(", "exclude(", "cast(", "adjust(", '"IN00=0.3 *=1"', '"GRAD_V"',
    '"OUT03:attn:0.2"', '"fp16"', "lambda x: x", "**", "*", "'", '"', "#", "\\", "é", "\x00", ":", ";", "if ",
    "import os", "__import__", ".", "{", "}", "f'{x}'", "\t", "  ", "True", "None", "sha256=", '"' + "0" * 64 + '"',
]  # fmt: skip


def _token_soup(rng: random.Random) -> str:
    text = "".join(rng.choice(_TOKENS) for _ in range(rng.randint(0, 60)))
    return (HEAD + text) if rng.random() < 0.8 else text


def _value(rng: random.Random, depth: int) -> str:
    roll = rng.random()
    if depth > 5 or roll < 0.3 + 0.12 * depth:  # a shrinking tree (deep nesting has cases of its own)
        return rng.choice(["0.5", "-1", "1e999", "2", "'x'", '"IN00=1"', "True", "None", "A", "B", "m0"])
    if roll < 0.5:
        return "[" + ", ".join(_value(rng, depth + 1) for _ in range(rng.randint(0, 4))) + "]"
    if roll < 0.6:
        return "-" * rng.randint(1, 3) + _value(rng, depth + 1)
    name = rng.choice([*METHODS, "model", "blocks", "preset", "param", "elemental", "include", "exclude", "nope"])
    args = [_value(rng, depth + 1) for _ in range(rng.randint(0, 4))]
    kwargs = [f"{rng.choice(['alpha', 'beta', 'seed', 'p', 'x', 'filter', 'elemental'])}={_value(rng, depth + 1)}"
              for _ in range(rng.randint(0, 2))]  # fmt: skip
    return f"{name}({', '.join(args + kwargs)})"


def _random_recipe(rng: random.Random) -> str:
    lines = ['A = model("a.safetensors")', 'B = model("b.safetensors")']
    for i in range(rng.randint(0, 12)):
        if rng.random() < 0.15:
            lines.append(f"m{i} = weighted_sum({rng.choice(['A', 'B'] + [f'm{j}' for j in range(i)])}, "
                         f"{rng.choice(['A', 'B'] + [f'm{j}' for j in range(i)])})")  # fmt: skip
        else:
            lines.append(f"m{i} = {_value(rng, 0)}")
    return HEAD + "\n".join(lines) + "\n"


def _deep(rng: random.Random) -> str:
    kind = rng.choice(["call", "list", "minus", "chain", "double"])
    n = rng.choice([10, 49, 51, 100, 199, 201, 1000, 5000])
    if kind == "call":
        return HEAD + "m = " + "weighted_sum(" * n + 'model("a"), model("b")' + ", alpha=0.5)" * n + "\n"
    if kind == "list":
        return HEAD + "m = " + "[" * n + "]" * n + "\n"
    if kind == "minus":
        return HEAD + "m = " + "-" * n + "1\n"
    step = "m{i} = weighted_sum(m{j}, m{j})\n" if kind == "double" else "m{i} = weighted_sum(m{j}, A)\n"
    body = 'A = model("a")\nm0 = weighted_sum(A, A)\n' + "".join(step.format(i=i + 1, j=i) for i in range(min(n, 400)))
    return HEAD + body


def test_fuzz_parsing_raises_only_recipe_errors_and_is_fast(tmp_path):
    rng = random.Random(20261202)
    cases = [bytes(rng.randrange(256) for _ in range(rng.randint(0, 200))) for _ in range(600)]
    cases += [HEAD.encode() + bytes(rng.randrange(256) for _ in range(rng.randint(0, 200))) for _ in range(600)]
    cases += [_token_soup(rng).encode("utf-8", "surrogatepass") for _ in range(1500)]
    cases += [_random_recipe(rng).encode() for _ in range(1500)]
    cases += [_deep(rng).encode() for _ in range(150)]
    path = tmp_path / "case.alloy"
    parsed = slowest = 0.0
    for number, raw in enumerate(cases):
        path.write_bytes(raw)
        started = time.thread_time()  # CPU time of this thread: other processes do not stretch it
        try:
            root = parse_recipe(read_recipe_file(str(path)))
            print_recipe(root)
            parsed += 1
        except RecipeError:
            pass
        except Exception as e:  # noqa: BLE001 - the point of the test
            pytest.fail(f"case {number} raised {type(e).__name__}: {e}\n{raw[:300]!r}")
        elapsed = time.thread_time() - started
        slowest = max(slowest, elapsed)
        assert elapsed < 1.0, f"case {number} took {elapsed:.2f} s: {raw[:200]!r}"
    assert len(cases) >= 4000 and parsed > 20  # some random recipes are valid, and those print
