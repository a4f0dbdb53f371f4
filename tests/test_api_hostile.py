"""Every /alloy/v1 route against wrongly typed, missing and hostile fields: a 400 (or 409) with one plain
line naming the field, never a 500, never Python's own text, and nothing on disk changed."""

from __future__ import annotations

import json

import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient

from lib_merge.surfaces.http import PREFIX, ROUTES, add_routes

# A body per route that would do real work, so that each replaced field is checked where it matters.
_GOOD = {
    "/merge": {"a": "model_a", "b": "model_b", "mode": "weighted_sum", "alpha": 0.3},
    "/save": {"name": "kept", "dtype": "fp16"},
    "/xyz": {
        "x": {"type": "alpha", "values": "0.2, 0.8"},
        "merge": {"a": "model_a", "b": "model_b"},
        "gen": {"steps": 1, "width": 64, "height": 64},
    },  # fmt: skip
    "/xyz/reserve": {"x": {"type": "alpha", "values": "0.2"}, "merge": {"a": "model_a", "b": "model_b"}},
    "/lora/bake": {"loras": ["nothing:1"]},
    "/lora/merge": {"loras": ["nothing:1"], "method": "concat", "name": "x"},
    "/lora/extract": {"a": "model_a", "b": "model_b", "rank": 4, "name": "x"},
    "/analyze": {"a": "model_a", "b": "model_b"},
}
_WRONG = [5, 1e308, -1, True, "x", "", [], [1, "a"], {}, {"name": 5}, None, "../../../etc/passwd"]
# Fields that are nested objects: their own fields get the wrong values too.
_SAVE = {"name": "n", "dtype": "fp16", "format": "safetensors", "prune": True, "overwrite": False}
_NESTED = {"/merge": {"save": _SAVE},
           "/xyz": {"x": {"type": "alpha", "values": "0.5"}, "gen": {"steps": 1}, "options": {"swap_xy": False},
                    "dice": {"mode": "R", "seed": 1}}}  # fmt: skip
_NOT_OBJECTS = ["[1, 2]", '"text"', "5", "true", "{not json", "\xff\xfe", '{"a": ' * 200]


def _plain(answer) -> str:
    assert answer.status_code in (400, 409), (answer.status_code, answer.text)
    body = answer.json()
    assert set(body) == {"error"} and isinstance(body["error"], str), body
    text = body["error"]
    assert text and "\n" not in text and "Traceback" not in text
    assert "unexpected" not in text, text  # the safety net was not needed: the value was checked
    assert "__init__()" not in text and "positional argument" not in text, text  # Python's own words
    return text


@pytest.fixture
def client(webui):
    app = FastAPI()
    add_routes(app, webui.workbench)
    return TestClient(app)


def _bodies(path: str):
    good = _GOOD.get(path, {})
    for field in good:
        for value in _WRONG:
            yield {**good, field: value}
    for field, inner in _NESTED.get(path, {}).items():
        for name in inner:
            for value in _WRONG:
                yield {**good, field: {**inner, name: value}}
    for value in _WRONG:
        yield {**good, "unknown_field": value}


def test_no_route_answers_500_to_wrongly_typed_fields(client, webui):
    before = sorted(p.name for p in webui.folder.iterdir())
    client.post(f"{PREFIX}/merge", json=_GOOD["/merge"])  # a live merge, so that /save has work to do
    for method, path, _ in ROUTES:
        if method != "POST" or path in ("/restore", "/stop", "/xyz/queue/start"):
            continue
        for body in _bodies(path):
            answer = client.post(PREFIX + path, json=body)
            if answer.status_code == 200:
                continue  # a wrong value that is a valid one here (a negative alpha, say)
            try:
                _plain(answer)
            except AssertionError as e:
                raise AssertionError(f"POST {path} {body!r}: {e}") from None
    after = sorted(p.name for p in webui.folder.iterdir())
    assert set(before) <= set(after)  # nothing the user had is gone


@pytest.mark.parametrize("raw", _NOT_OBJECTS)
def test_a_body_that_is_no_json_object_is_a_400_on_every_route(client, raw):
    for method, path, _ in ROUTES:
        if method != "POST":
            continue
        answer = client.post(PREFIX + path, content=raw.encode("utf-8", "surrogateescape"),
                             headers={"content-type": "application/json"})  # fmt: skip
        if path in ("/restore", "/stop", "/xyz/queue/start") and answer.status_code == 200:
            continue  # routes without a body ignore it
        assert "JSON" in _plain(answer) or "object" in _plain(answer)


def test_query_parameters_of_the_wrong_type_are_a_400(client):
    for query in ({"limit": "many"}, {"limit": "1e999"}, {"any_word": "perhaps"}, {"q": "x" * 5_000}):
        answer = client.get(f"{PREFIX}/history", params=query)
        if answer.status_code != 200:
            _plain(answer)
    assert client.get(f"{PREFIX}/history", params={"limit": "many"}).status_code == 400


@pytest.mark.parametrize(
    "body, words",
    [
        ({"save": {"name": 5}}, "'name' must be"),
        ({"save": {"name": "n", "colour": 1}}, 'unknown fields in "save": colour'),
        ({"save": "n"}, '"save" must be an object'),
        ({"wait": "no"}, "'wait' must be"),
        ({"alpha": 1e300}, "alpha"),
        ({"blocks": "IN00=nan *=0.5"}, "IN00"),
        ({"blocks": "IN00=1e999 *=0.5"}, "IN00"),
    ],
)
def test_merge_fields_are_checked_before_any_work(client, webui, body, words):
    answer = client.post(f"{PREFIX}/merge", json={"a": "model_a", "b": "model_b", **body})
    assert words in _plain(answer)
    assert client.get(f"{PREFIX}/status").json()["merged"] is False  # nothing was written into the model


def test_an_existing_file_names_the_json_field_not_the_cli_flag(client, webui):
    assert client.post(f"{PREFIX}/merge", json=_GOOD["/merge"]).status_code == 200
    first = client.post(f"{PREFIX}/save", json={"name": "twice"})
    assert first.status_code == 200, first.text
    again = _plain(client.post(f"{PREFIX}/save", json={"name": "twice"}))
    assert '"overwrite": true' in again and "--overwrite" not in again
    assert client.post(f"{PREFIX}/save", json={"name": "twice", "overwrite": True}).status_code == 200


def test_json_numbers_python_cannot_hold_are_refused(client):
    for number in ("1e999", "NaN", "-Infinity"):
        raw = json.dumps({"a": "model_a", "b": "model_b"}).replace("}", f', "save": {{"x": [1, {number}]}}}}')
        answer = client.post(f"{PREFIX}/merge", content=raw, headers={"content-type": "application/json"})
        assert _plain(answer) == "save.x[1] is not a finite number"
