"""The merge history: an append-only CSV log that survives damage and searches all rows.

Rows are only ever appended (one write, flush, fsync, under an exclusive lock so two processes
never take the same id); a failed merge appends nothing. Damage is contained, never spread:
- reading skips a row it cannot parse, undecodable bytes and NUL bytes, and says what it skipped;
- a file cut off in the middle of a row is closed off before the next append (the cut row is
  marked and skipped), so a new row is never glued onto a broken one;
- a file whose header is damaged is moved aside to `<name>.damaged-<time>` and a fresh file
  started; its rows stay readable with `history list --file`.
"""

from __future__ import annotations

import contextlib
import csv
import datetime
import io
import json
import os
import shlex
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import BinaryIO

from lib_merge.app.history.pending import orphaned_rows, settle
from lib_merge.app.history.rows import COLUMNS, HistoryRow, RowDraft
from lib_merge.errors import HistoryError, ParameterError
from lib_merge.paths import user_data_dir

try:
    import fcntl
except ImportError:  # Windows: appends are not serialised between processes there
    fcntl = None

CUT_MARK = "(row cut off)"  # the extra cell that closes a row the file lost the end of
Warn = Callable[[str], None]


@dataclass
class HistoryLog:
    rows: list[HistoryRow]
    skipped: list[str] = field(default_factory=list)  # "history.csv line 57 skipped: bad JSON in settings"
    header_damaged: bool = False
    needs_closing: str = ""  # what an append must write first so that its row starts cleanly


def history_file() -> Path:
    return user_data_dir() / "history.csv"


_DEFAULTS = {"name": "", "recipe_hash": "", "models": "", "settings": "{}", "output": "not saved", "recipe": ""}


def read_history(path: Path | None = None) -> HistoryLog:
    """Rows of a history file; an older header (other or fewer columns) is mapped by column name."""
    path = Path(path or history_file())
    try:
        raw = path.read_bytes()
    except FileNotFoundError:
        return HistoryLog([])
    except OSError as e:
        raise HistoryError(f"cannot read history {path}: {e.strerror}") from None
    return parse_history(raw, path.name)


def parse_history(raw: bytes, name: str = "history.csv") -> HistoryLog:
    skipped: list[str] = []
    text = _decode(raw, name, skipped)
    if "\x00" in text:
        skipped.append(f"{name}: {text.count(chr(0))} NUL bytes skipped")
        text = text.replace("\x00", "")
    reader = csv.reader(io.StringIO(text))
    records = [(reader.line_num, record) for record in _records(reader)]
    cut_at_end = text.count('"') % 2 == 1  # the file ends inside a quoted cell
    rows: list[HistoryRow] = []
    columns, header_damaged = _columns(records[0][1] if records else list(COLUMNS))
    if header_damaged:
        skipped.append(f"{name} line 1: damaged header; rows read in Alloy's column order")
    elif records:
        records = records[1:]
    for n, (line, record) in enumerate(records):
        first = header_damaged and n == 0  # a damaged header, or the first row of a file without one
        if not record:
            continue
        if record[-1] == CUT_MARK or (cut_at_end and n == len(records) - 1):
            skipped.append(f"{name} line {line} skipped: the row was cut off (the file was truncated there)")
            continue
        if len(record) != len(columns):
            if not first:
                skipped.append(f"{name} line {line} skipped: {len(record)} columns instead of {len(columns)}")
            continue
        values = dict(zip(columns, record, strict=True))
        cells = [values.get(c, _DEFAULTS.get(c, "")) for c in COLUMNS]
        reason = _row_problem(cells)
        if reason:
            if not first:
                skipped.append(f"{name} line {line} skipped: {reason}")
            continue
        rows.append(
            HistoryRow(int(cells[0]), cells[1], cells[2], cells[3], cells[4], json.loads(cells[5]), cells[6], cells[7])
        )
    return HistoryLog(rows, skipped, header_damaged, _closing(text, cut_at_end, header_only=len(records) == 0))


def _closing(text: str, cut_at_end: bool, header_only: bool) -> str:
    """What ends a cut-off last row so that the next row starts on a line of its own (and the cut
    row, marked with an extra cell, stays skipped instead of passing for a whole row)."""
    if cut_at_end:
        return f'","{CUT_MARK}"\n'
    if not text or text.endswith("\n"):
        return ""
    return "\n" if header_only else f',"{CUT_MARK}"\n'


def _decode(raw: bytes, name: str, skipped: list[str]) -> str:
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError as e:
        text = raw.decode("utf-8", errors="ignore")
        dropped = len(raw) - len(text.encode("utf-8"))
        line = raw[: e.start].count(b"\n") + 1
        skipped.append(f"{name}: {dropped} undecodable bytes skipped (the first on line {line})")
        return text


def _records(reader) -> Iterator[list[str]]:
    try:
        yield from reader
    except csv.Error:  # the csv module gives up only on a hopeless tail; what came before stands
        return


def _columns(header: list[str]) -> tuple[list[str], bool]:
    """The header's column names, or Alloy's own order when the header is damaged."""
    names = [c.strip().lower() for c in header]
    if "id" in names and set(names) <= set(COLUMNS) and len(set(names)) == len(names):
        return names, False
    return list(COLUMNS), True


def _row_problem(record: list[str]) -> str:
    if not record[0].strip().isdigit():
        return f"id {record[0]!r} is not a whole number"
    try:
        settings = json.loads(record[5])
    except ValueError:
        return "bad JSON in settings"
    if not isinstance(settings, dict):
        return "settings is not a JSON object"
    return ""


def append_history(draft: RowDraft, path: Path | None = None, warn: Warn | None = None) -> HistoryRow:
    """Append one row with the next id; the file is created with its header when missing.

    Raises HistoryError when the file cannot be written; `warn` hears of damage that was contained.
    """
    path = Path(path or history_file())
    warn = warn or _ignore
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        with _locked_log(path, warn) as (f, log):
            _recover(f, log, path, warn)
            row = _write_row(f, draft, log)
    except OSError as e:
        raise HistoryError(f"cannot write history {path}: {e.strerror or e}") from None
    return row


def try_append_history(draft: RowDraft, path: Path | None, warn: Warn) -> HistoryRow | None:
    """`append_history` for a merge that already succeeded: a history that cannot be written is a
    warning, never a failure."""
    try:
        return append_history(draft, path, warn)
    except HistoryError as e:
        warn(f"{e}; the merge itself succeeded")
        return None


def recover_history(path: Path | None = None, warn: Warn | None = None) -> int:
    """Log the rows that merge processes promised (see `pending`) and died before logging."""
    path = Path(path or history_file())
    if not orphaned_rows(path):
        return 0
    warn = warn or _ignore
    try:
        with _locked_log(path, warn) as (f, log):
            return _recover(f, log, path, warn)
    except OSError as e:
        raise HistoryError(f"cannot write history {path}: {e.strerror or e}") from None


def _recover(f: BinaryIO, log: HistoryLog, path: Path, warn: Warn) -> int:
    count = 0
    for note, draft in orphaned_rows(path):
        logged = draft is not None and any(
            r.output == draft.output and r.recipe_hash == draft.recipe_hash for r in log.rows
        )  # the process died after logging, before it removed its note
        if draft is not None and not logged:
            row = _write_row(f, draft, log)
            warn(f"logged history row {row.id} for {draft.output}: {draft.settings['recovered']}")
            count += 1
        settle(note)
    return count


def _ignore(_: str) -> None:
    pass


def _write_row(f: BinaryIO, draft: RowDraft, log: HistoryLog) -> HistoryRow:
    row = HistoryRow(
        max((r.id for r in log.rows), default=0) + 1,
        datetime.datetime.now().isoformat(timespec="seconds"),
        draft.name,
        draft.recipe_hash,
        draft.models,
        draft.settings,
        draft.output,
        draft.recipe,
    )
    buf = io.StringIO()
    buf.write(log.needs_closing)
    writer = csv.writer(buf, dialect="excel", lineterminator="\n")
    if f.tell() == 0:
        writer.writerow(COLUMNS)
    writer.writerow(row.cells())
    f.write(buf.getvalue().encode("utf-8"))
    f.flush()
    os.fsync(f.fileno())
    log.rows.append(row)
    log.needs_closing = ""
    return row


@contextlib.contextmanager
def _locked_log(path: Path, warn: Warn) -> Iterator[tuple[BinaryIO, HistoryLog]]:
    """The history file opened for appending under an exclusive lock, with its rows read.

    A file with a damaged header is moved aside first and a new one started.
    """
    while True:
        f = open(path, "a+b")  # noqa: SIM115
        try:
            if fcntl is not None:
                fcntl.flock(f.fileno(), fcntl.LOCK_EX)
            if _same_file(f, path):
                f.seek(0)
                log = parse_history(f.read(), path.name)
                if not log.header_damaged:
                    f.seek(0, os.SEEK_END)
                    yield f, log
                    return
                moved = _move_aside(path)
                warn(
                    f"{path} had a damaged header: moved to {moved.name} and a new history started "
                    f"(its rows: history list --file {moved})"
                )
        finally:
            f.close()


def _same_file(f: BinaryIO, path: Path) -> bool:
    """Whether the locked handle is still the file at `path` (another process may have moved it aside)."""
    try:
        st = os.stat(path)
    except FileNotFoundError:
        return False
    mine = os.fstat(f.fileno())
    return (st.st_dev, st.st_ino) == (mine.st_dev, mine.st_ino)


def _move_aside(path: Path) -> Path:
    stamp = datetime.datetime.now().strftime("%Y%m%d-%H%M%S")
    for n in range(1000):
        moved = path.with_name(f"{path.name}.damaged-{stamp}" + (f"-{n}" if n else ""))
        try:
            os.link(path, moved)  # never replaces an earlier damaged copy
        except FileExistsError:
            continue
        except OSError:
            if moved.exists():
                continue
            os.rename(path, moved)
            return moved
        os.unlink(path)
        return moved
    raise HistoryError(f"cannot move the damaged history {path} aside")


def find_row(rows: list[HistoryRow], ident: int) -> HistoryRow:
    """Row by id; -1 is the last row, -2 the one before."""
    if ident < 0 and len(rows) >= -ident:
        return rows[ident]
    for r in rows:
        if r.id == ident:
            return r
    raise ParameterError(f"no history row with id {ident}")


def search_history(rows: list[HistoryRow], query: str, any_word: bool = False) -> list[HistoryRow]:
    """Case-insensitive search over whole rows: all words (or any, with `any_word`); quoted phrases
    stay together; `id:12` matches the id and `hash:1a2b` the start of the recipe hash."""
    try:
        words = shlex.split(query)
    except ValueError:
        words = query.split()
    if not words:
        return list(rows)
    tests = [_word_test(w) for w in words]
    combine = any if any_word else all
    return [r for r in rows if combine(t(r) for t in tests)]


def _word_test(word: str):
    low = word.lower()
    if low.startswith("id:") and low[3:].lstrip("-").isdigit():
        return lambda r: r.id == int(low[3:])
    if low.startswith("hash:") and len(low) > 5:
        return lambda r: r.recipe_hash.lower().startswith(low[5:])
    return lambda r: low in r.text().lower()
