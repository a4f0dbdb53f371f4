"""What the workbench does at start and on request besides merging: leftovers of killed merges cleaned,
SuperMerger's history imported. Needs `self.host` and `self.history_path()` (the Workbench)."""

from __future__ import annotations

from pathlib import Path

from lib_merge.app.history import SUPERMERGER_HISTORY, import_supermerger, recover_history
from lib_merge.errors import AlloyError
from lib_merge.io.tempfiles import clean_stale
from lib_merge.paths import file_in_folders, user_data_dir


class Upkeep:
    def clean_leftovers(self) -> list[str]:
        """At start: remove temporary files that killed merges left in the save folder (and below it)
        and in the user-data folder, and log the rows of merges killed between saving and logging."""
        lines: list[str] = []
        for folder in dict.fromkeys([self.host.save_folder(), str(user_data_dir())]):
            report = clean_stale(folder, recursive=True)
            if report.removed:
                lines.append(report.text(folder))
        try:
            recover_history(self.history_path(), warn=lines.append)
        except AlloyError as e:
            lines.append(str(e))
        return lines

    def import_folders(self) -> list[Path]:
        """Where a server may read files its users name for import: user data, installed SuperMerger extensions."""
        return [user_data_dir(), *(Path(f) for f in self.host.supermerger_folders())]

    def supermerger_history(self) -> str:
        """An installed SuperMerger's history file, for the History tab's import field ("" when none)."""
        found = (Path(folder) / SUPERMERGER_HISTORY for folder in self.host.supermerger_folders())
        return next((str(path) for path in found if path.is_file()), "")

    def import_supermerger_history(self, path_text: str) -> str:
        """Import SuperMerger's mergehistory.csv from the user-data folder or an installed SuperMerger."""
        source = file_in_folders(path_text, self.import_folders(), SUPERMERGER_HISTORY)
        warnings: list[str] = []
        count, skipped = import_supermerger(source, self.history_path(), warnings.append)
        return f"Imported {count} rows." + "".join(f" {s}." for s in [*warnings, *skipped][:3])
