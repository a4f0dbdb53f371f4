"""The merge history: append-only CSV, damage-tolerant reading, search over every row, CLI."""

from __future__ import annotations

import csv
import json

import pytest
from test_cli import cli, error_line

from lib_merge.app.history import (
    COLUMNS,
    RowDraft,
    append_history,
    find_row,
    import_supermerger,
    read_history,
    search_history,
)
from lib_merge.errors import ParameterError


def _add(path, name, warn=None, **kw):
    draft = RowDraft(
        name,
        kw.get("hash", "ab" * 32),
        kw.get("models", "A=a.safetensors [0123456789]"),
        kw.get("settings", {"alpha": 0.5}),
        kw.get("output", "not saved"),
        kw.get("recipe", 'alloy-recipe 1\nA = model("a")\n'),
    )
    return append_history(draft, path, warn)


def test_rows_are_appended_with_rising_ids_and_quoting(tmp_path):
    path = tmp_path / "history.csv"
    first = _add(path, "one, with comma", recipe='alloy-recipe 1\nA = model("x \\"q\\"")\nmerged = A\n')
    before = path.read_bytes()
    second = _add(path, "two")
    assert (first.id, second.id) == (1, 2)
    assert path.read_bytes().startswith(before)  # appended, never rewritten
    with open(path, newline="", encoding="utf-8") as f:
        records = list(csv.reader(f))
    assert tuple(records[0]) == COLUMNS and len(records) == 3
    rows = read_history(path).rows
    assert rows[0].name == "one, with comma" and rows[0].recipe.endswith("merged = A\n")
    assert rows[0].settings == {"alpha": 0.5}


def test_damaged_rows_are_skipped_and_reported(tmp_path):
    path = tmp_path / "history.csv"
    _add(path, "good")
    with open(path, "a", encoding="utf-8") as f:
        f.write("2,t,bad,h,m,{not json},o,r\n")
        f.write("x,t,bad,h,m,{},o,r\n")
        f.write("3,too,few\n")
    _add(path, "after")
    log = read_history(path)
    assert [r.name for r in log.rows] == ["good", "after"]
    assert log.rows[-1].id == 2  # max valid id + 1
    assert log.skipped == [
        "history.csv line 5 skipped: bad JSON in settings",  # the first row spans lines 2-4
        "history.csv line 6 skipped: id 'x' is not a whole number",
        "history.csv line 7 skipped: 3 columns instead of 8",
    ]


def test_search_words_phrases_and_columns(tmp_path):
    path = tmp_path / "history.csv"
    _add(path, "Anime Mix", hash="1a2b" + "0" * 60)
    _add(path, "photo real", hash="ffff" + "0" * 60, settings={"preset": "GRAD_V"})
    _add(path, "anime photo", hash="abcd" + "0" * 60)
    rows = read_history(path).rows
    assert [r.id for r in search_history(rows, "ANIME")] == [1, 3]
    assert [r.id for r in search_history(rows, "anime photo")] == [3]
    assert [r.id for r in search_history(rows, "anime photo", any_word=True)] == [1, 2, 3]
    assert [r.id for r in search_history(rows, '"photo real"')] == [2]
    assert [r.id for r in search_history(rows, "grad_v")] == [2]
    assert [r.id for r in search_history(rows, "id:3")] == [3]
    assert [r.id for r in search_history(rows, "hash:1A2B")] == [1]
    assert find_row(rows, -1).id == 3 and find_row(rows, -2).id == 2
    with pytest.raises(ParameterError, match="no history row with id 0"):
        find_row(rows, 0)


def test_cli_merges_are_logged_and_shown(sd1, tmp_path, monkeypatch):
    home = tmp_path / "home"
    monkeypatch.setenv("ALLOY_HOME", str(home))
    out = tmp_path / "logged.safetensors"
    proc = cli("merge", "--a", sd1[0], "--b", sd1[1], "--mode", "ws", "--alpha", "0.4", "-o", out)
    assert proc.returncode == 0, proc.stderr
    row = read_history(home / "history.csv").rows[-1]
    assert row.recipe_hash == proc.stdout.splitlines()[-2] and row.output == str(out)
    assert row.models.startswith("A=sd1_a.safetensors [") and ";B=sd1_b.safetensors [" in row.models
    assert row.settings["alpha"] == 0.4 and row.settings["mode"] == "ws"
    shown = cli("history", "show", "-1")
    assert shown.returncode == 0 and "merged = weighted_sum(A, B, alpha=0.4)" in shown.stdout
    listed = cli("history", "search", "LOGGED")
    assert "logged" in listed.stdout and listed.stdout.count("\n") == 1
    assert cli("history", "show", "99").returncode == 3
    assert "no history row with id 99" in error_line(cli("history", "show", "99"))
    failed = cli("merge", "--a", sd1[0], "--b", sd1[1], "--mode", "ws", "-o", out)  # exists: fails
    assert failed.returncode == 5
    assert len(read_history(home / "history.csv").rows) == 1  # a failed merge appends nothing
    assert json.loads(json.dumps(row.settings)) == row.settings


def test_an_older_header_is_read_by_column_name(tmp_path):
    path = tmp_path / "history.csv"
    path.write_text('time,id,name,recipe\n2025-01-01T10:00:00,4,old merge,"alloy-recipe 1\nmerged = x"\n', "utf-8")
    log = read_history(path)
    assert not log.skipped
    row = log.rows[0]
    assert (row.id, row.name, row.settings, row.output) == (4, "old merge", {}, "not saved")
    assert row.recipe.startswith("alloy-recipe 1\n")


def test_supermerger_history_imports_as_settings_and_recipes(tmp_path, monkeypatch):
    source = tmp_path / "mergehistory.csv"
    source.write_text(
        '"ID","time","name","weights alpha","weights beta","model A","model B","model C","alpha","beta","mode",'
        '"use MBW","plus lora","custum name","save setting","use ID"\n'
        '"1","2024-05-01 10:00:00","mixA","","","a.safetensors","b.safetensors","","0.3","0.2",'
        '"Weight sum:A*(1-alpha)+B*alpha","False","","","",""\n'
        '"2","2024-05-01 11:00:00","mixB","0,1,0.5","","a.safetensors","b.safetensors","c.safetensors","0.5","0",'
        '"Add difference:A+(B-C)*alpha","True","","","",""\n'
        '"3","2024-05-01 12:00:00","odd","","","a.safetensors","","","0.5","0","cosine magic","False","","","",""\n',
        "utf-8",
    )
    history = tmp_path / "alloy.csv"
    append_history(RowDraft("mine", "f" * 64, "A=x [1]", {}, "not saved", "r"), history)
    count, skipped = import_supermerger(source, history)
    assert count == 2 and skipped == ["mergehistory.csv line 4 skipped: mode 'cosine magic' or model A missing"]
    rows = read_history(history).rows
    assert [r.id for r in rows] == [1, 2, 3]
    assert rows[1].settings["mode"] == "weighted_sum" and rows[1].settings["alpha"] == 0.3
    assert "weighted_sum(A, B, alpha=0.3)" in rows[1].recipe
    assert rows[2].settings["use_mbw"] and rows[2].settings["blocks"] == "0,1,0.5"
    assert rows[2].models == "A=a.safetensors;B=b.safetensors;C=c.safetensors"
    assert [r.id for r in search_history(rows, '"SuperMerger id 2"')] == [3]
    with pytest.raises(ParameterError, match="cannot read SuperMerger history"):
        import_supermerger(tmp_path / "missing.csv", history)
    monkeypatch.setenv("ALLOY_HOME", str(tmp_path / "home"))
    proc = cli("history", "import-supermerger", source)
    assert proc.returncode == 0 and proc.stdout == "imported 2 rows\n" and "line 4 skipped" in proc.stderr


def _lines(path):
    return path.read_bytes().decode("utf-8", "ignore")


def test_a_truncated_last_line_is_closed_off_and_the_next_row_stands_alone(tmp_path):
    path = tmp_path / "history.csv"
    _add(path, "one")
    _add(path, "two", recipe="r")  # an unquoted last cell: cutting it leaves no open quote
    path.write_bytes(path.read_bytes()[:-3])  # the power went off mid-row: no newline at the end
    _add(path, "three")
    log = read_history(path)
    assert [r.name for r in log.rows] == ["one", "three"]
    assert [r.id for r in log.rows] == [1, 2]
    assert any("the row was cut off" in s for s in log.skipped)


def test_a_file_cut_inside_a_quoted_recipe_hides_nothing_after_the_next_append(tmp_path):
    path = tmp_path / "history.csv"
    _add(path, "one")
    _add(path, "two", recipe='alloy-recipe 1\nA = model("a")\nmerged = weighted_sum(A, A, alpha=0.5)\n')
    raw = path.read_bytes()
    path.write_bytes(raw[: raw.rindex(b"merged")])  # cut inside the quoted recipe of row two
    assert [r.name for r in read_history(path).rows] == ["one"]  # the cut row is not passed off as whole
    _add(path, "three")
    _add(path, "four")
    log = read_history(path)
    assert [r.name for r in log.rows] == ["one", "three", "four"]
    assert len([s for s in log.skipped if "the row was cut off" in s]) == 1


@pytest.mark.parametrize("header", [b"", b"id,ti\n", b"\x00\x00garbage\xff,zz\n", b"identifier,time,name\n"])
def test_a_damaged_header_is_moved_aside_and_its_rows_stay_readable(tmp_path, header):
    path = tmp_path / "history.csv"
    _add(path, "old one")
    _add(path, "old two")
    raw = path.read_bytes()
    path.write_bytes(header + raw[raw.index(b"\n") + 1 :] if header else raw[raw.index(b"\n") + 1 :])
    warnings = []
    row = _add(path, "new", warn=warnings.append)
    (moved,) = [p for p in tmp_path.iterdir() if p.name.startswith("history.csv.damaged-")]
    assert len(warnings) == 1 and moved.name in warnings[0] and "history list --file" in warnings[0]
    assert row.id == 1 and [r.name for r in read_history(path).rows] == ["new"]
    assert [r.name for r in read_history(moved).rows] == ["old one", "old two"]
    listed = cli("history", "list", "--file", moved)
    assert listed.returncode == 0 and "old one" in listed.stdout and "old two" in listed.stdout
    assert "damaged header" in listed.stderr


def test_undecodable_and_nul_bytes_are_skipped_with_a_warning(tmp_path, monkeypatch):
    monkeypatch.setenv("ALLOY_HOME", str(tmp_path))
    path = tmp_path / "history.csv"
    _add(path, "café")
    with open(path, "ab") as f:
        f.write(b"\xff\xfe\x00 junk\n")
    _add(path, "after")
    log = read_history(path)
    assert [r.name for r in log.rows] == ["café", "after"]
    assert any("undecodable bytes skipped (the first on line" in s for s in log.skipped)
    listed = cli("history", "list")
    assert listed.returncode == 0 and "after" in listed.stdout and "Traceback" not in listed.stderr
    assert "warning: history.csv: 2 undecodable bytes skipped" in listed.stderr


def test_a_history_that_cannot_be_written_warns_and_the_merge_stands(sd1, tmp_path, monkeypatch):
    home = tmp_path / "home"
    (home / "history.csv").mkdir(parents=True)  # the history path is a folder
    monkeypatch.setenv("ALLOY_HOME", str(home))
    out = tmp_path / "m.safetensors"
    proc = cli("merge", "--a", sd1[0], "--b", sd1[1], "--mode", "ws", "-o", out)
    assert proc.returncode == 0 and out.exists() and proc.stdout.splitlines()[-1] == str(out), proc.stderr
    assert "warning: cannot write history" in proc.stderr and "the merge itself succeeded" in proc.stderr
    assert "Traceback" not in proc.stderr
    listed = cli("history", "list")
    assert listed.returncode == 5 and "cannot read history" in error_line(listed)


def test_concurrent_appends_take_distinct_ids(tmp_path):
    import threading

    path = tmp_path / "history.csv"
    threads = [threading.Thread(target=lambda n=n: [_add(path, f"t{n}-{i}") for i in range(10)]) for n in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    log = read_history(path)
    assert sorted(r.id for r in log.rows) == list(range(1, 61)) and not log.skipped


def test_a_server_imports_supermerger_history_only_from_allowed_folders(tmp_path, monkeypatch):
    from lib_merge.app.workbench import Workbench
    from lib_merge.host.folder import FolderHost

    home = tmp_path / "home"
    home.mkdir()
    monkeypatch.setenv("ALLOY_HOME", str(home))
    extension = tmp_path / "extensions" / "sd-webui-supermerger"
    extension.mkdir(parents=True)
    host = FolderHost(str(tmp_path))
    monkeypatch.setattr(host, "supermerger_folders", lambda: [str(extension)])
    bench = Workbench(host)
    row = (
        '"ID","time","name","weights alpha","weights beta","model A","model B","model C","alpha","beta","mode",'
        '"use MBW"\n"1","t","mix","","","a.safetensors","b.safetensors","","0.3","0","Weight sum:A","False"\n'
    )
    secret = tmp_path / "elsewhere" / "mergehistory.csv"
    secret.parent.mkdir()
    secret.write_text(row)
    (extension / "notes.csv").write_text(row)
    answers = set()
    for attempt in (str(secret), str(tmp_path / "elsewhere" / "missing.csv"), "../elsewhere/mergehistory.csv",
                    str(extension / "notes.csv"), str(extension / ".." / ".." / "elsewhere" / "mergehistory.csv"),
                    "/etc/passwd", ""):  # fmt: skip
        with pytest.raises(ParameterError) as refused:
            bench.import_supermerger_history(attempt)
        answers.add(str(refused.value))
    assert len(answers) == 1 and "only a file named mergehistory.csv" in answers.pop()  # tells nothing more
    assert read_history(bench.history_path()).rows == []
    (extension / "mergehistory.csv").write_text(row)
    assert bench.import_supermerger_history(str(extension / "mergehistory.csv")).startswith("Imported 1 rows")
    (home / "mergehistory.csv").write_text(row)
    assert bench.import_supermerger_history("mergehistory.csv").startswith("Imported 1 rows")  # a bare name
    assert len(read_history(bench.history_path()).rows) == 2
