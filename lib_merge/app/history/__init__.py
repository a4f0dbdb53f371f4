"""The merge history (a damage-proof CSV log), its pending rows and SuperMerger's import."""

from lib_merge.app.history.log import (
    CUT_MARK,
    HistoryLog,
    append_history,
    find_row,
    history_file,
    parse_history,
    read_history,
    recover_history,
    search_history,
    try_append_history,
)
from lib_merge.app.history.pending import announce, settle
from lib_merge.app.history.rows import COLUMNS, NOT_SAVED, HistoryRow, RowDraft, settings_record
from lib_merge.app.history.supermerger import FILE_NAME as SUPERMERGER_HISTORY
from lib_merge.app.history.supermerger import import_supermerger

__all__ = [
    "COLUMNS",
    "CUT_MARK",
    "HistoryLog",
    "HistoryRow",
    "NOT_SAVED",
    "RowDraft",
    "SUPERMERGER_HISTORY",
    "announce",
    "append_history",
    "find_row",
    "history_file",
    "import_supermerger",
    "parse_history",
    "read_history",
    "recover_history",
    "search_history",
    "settings_record",
    "settle",
    "try_append_history",
]
