"""The workbench: merge, restore, save, generate and log, the same for every host and surface.

The Gradio tabs, the HTTP API and the tests all call this one object with dataclasses. It owns
the live merge's state (backups, recipe, history id), one lock for the live model, the source
cache and the cancel token; everything host-specific goes through the host's ports (app/ports.py): its
model files always, its live model and its generation when it offers them.
"""

from __future__ import annotations

import contextlib
import os
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import TypeVar

from lib_merge.app.apply import ApplyOptions, apply_recipe, resolve_recipe
from lib_merge.app.cache_budget import parse_cache_budget
from lib_merge.app.history import (
    HistoryRow,
    RowDraft,
    history_file,
    settings_record,
    try_append_history,
)
from lib_merge.app.hold import ModelHold
from lib_merge.app.lora_jobs import LoraJobs
from lib_merge.app.naming import EXTENSIONS, auto_name, custom_file_name
from lib_merge.app.ports import GenResult, GenSettings, Host, MergeIdentity, patchable
from lib_merge.app.progress import Progress
from lib_merge.app.requests import (
    LiveMerge,
    MergeOutcome,
    MergeRequest,
    SaveRequest,
)
from lib_merge.app.saving import SaveJob, check_save, loaded_or_removed, save_and_log
from lib_merge.app.toolkit import run_autoprune
from lib_merge.app.upkeep import Upkeep
from lib_merge.engine.bind import BoundRecipe, bind_recipe, hashed_recipe
from lib_merge.engine.live import LiveBackup
from lib_merge.engine.options import CancelToken, EngineOptions
from lib_merge.engine.progress import ProgressEvent
from lib_merge.errors import AlloyError, BusyError, ParameterError, UnsafePathError
from lib_merge.io.cache import CacheStats, TensorCache
from lib_merge.io.device import check_device
from lib_merge.io.dtypes import parse_compute_dtype
from lib_merge.paths import inside_folder
from lib_merge.recipe import parse_recipe
from lib_merge.recipe.form import compile_form
from lib_merge.recipe.hashed import HashedRecipe
from lib_merge.recipe.nodes import Node

T = TypeVar("T")


class Workbench(LoraJobs, Upkeep):
    def __init__(self, host: Host):
        self.host = host
        self.backup = LiveBackup()
        self.live: LiveMerge | None = None
        self.progress = Progress()
        self._lock = threading.Lock()
        self.plot_lock = threading.Lock()  # one XYZ plot at a time: its merges and generations must not interleave
        self.hold = ModelHold()  # a study owns the loaded model while it runs
        self._cancel = CancelToken()
        self._cache: TensorCache | None = None
        self._cache_setting = ""  # the setting the cache was made for

    # -- state the host reports -------------------------------------------------------------
    def model_loaded(self, ours: bool) -> None:
        """The host loaded a model: backups of the old one are void unless the load was our own identity."""
        model = self.host.live
        if model is None:
            return
        if not model.can_patch:  # save and load: the merge is loaded while its file is selected
            if self.live is not None and model.loaded_file() != self.live.path:
                self.live = None
            return
        if not ours:
            self.backup = LiveBackup()
            self.live = None
            model.clear_identity()

    def bring_back(self, held: LiveMerge) -> bool:
        """Merge `held` into the loaded model again, with its name and history row: a generation loaded
        another checkpoint for itself only (an API client's `override_settings`) and the host puts the
        merge back when that generation ends. Runs inside the host's generation, which holds the host's
        lock: while a merge or restore holds ours (and may wait for the host's), it does not wait but
        answers False, and the host tries again later. Nothing is logged: the merge's row stands."""
        if patchable(self.host) is None:
            return False
        if self.live is not None and self.live.recipe.digest == held.recipe.digest:
            return True
        if not self._lock.acquire(blocking=False):
            return False
        try:
            with bind_recipe(held.recipe.root, self.host.save_folder()) as bound:
                self._cancel = CancelToken()
                result, _ = self._patch(bound, held.name)
                self.live = LiveMerge(held.name, result.recipe, held.history_id, held.base_path)
                self.progress = Progress()
            return True
        finally:
            self._lock.release()

    # -- merging ----------------------------------------------------------------------------
    def recipe_of(self, request: MergeRequest) -> Node:
        """The request's recipe with the host's checkpoint titles resolved to files."""
        if request.root is not None:
            root = request.root
        elif request.recipe and request.recipe.strip():
            root = parse_recipe(request.recipe)
        elif request.settings is not None:
            root = compile_form(request.settings)
        else:
            raise ParameterError("nothing to merge: give settings or a recipe")
        return resolve_recipe(root, self.host.resolve_checkpoint, self.host.lora_folder())

    def merge(self, request: MergeRequest) -> MergeOutcome:
        self.hold.check()
        check_device(self.host.config().device)  # the setting, refused before any file is read or model loaded
        if not self._lock.acquire(blocking=request.wait):
            raise BusyError("a merge is running")
        try:
            self._cancel = CancelToken()
            self.progress = Progress("preparing")
            started = time.perf_counter()
            root = self.recipe_of(request)
            # The one bind of this merge: the live patch, the name and a save after it all use it.
            with bind_recipe(root, self.host.save_folder()) as bound:
                if request.save:
                    check_save(request.save, bound)
                if patchable(self.host) is None:
                    return self._merge_to_file(bound, request, started)
                with self._exclusive():
                    return self._merge_live(bound, request, started)
        finally:
            self.progress = Progress()
            self._lock.release()

    def _merge_live(self, bound: BoundRecipe, request: MergeRequest, started: float) -> MergeOutcome:
        live = self.live
        if live is not None and request.save is None:
            recipe = hashed_recipe(bound, self.progress_event)  # the hashes come from the cache, mostly
            if recipe.digest == live.recipe.digest:  # an XYZ cell or a second click: already loaded
                seconds = time.perf_counter() - started
                message = f"{live.name} is loaded already: nothing to merge."
                return MergeOutcome(live.name, live.recipe, live.history_id, seconds, None, message, merged=False)
        base = bound.primary.path
        result, name = self._patch(bound)
        recipe = result.recipe
        self.live = LiveMerge(name, recipe, 0, base)
        warnings: list[str] = [f"Note: {note}" for note in result.report.notes]
        path, row, not_saved = None, None, ""
        settings = self._settings(request)
        if request.save:  # the merge stands even when saving fails; the message says why
            try:
                path, row = self._save(bound, recipe, request.save, settings, warnings, name)
            except AlloyError as e:
                not_saved = f" Not saved: {e}"
        if path is None and request.log:
            draft = RowDraft.of(recipe, settings, name=name)
            row = try_append_history(draft, self.history_path(), _warn_into(warnings))
        self.live.history_id = row.id if row else 0
        seconds = time.perf_counter() - started
        skipped = " VAE: external VAE kept." if self.host.live.skip_prefixes() else ""
        stats = self.cache_stats()
        cached = f", cache {stats.bytes_used / 1e9:.1f} GB" if stats else ""
        message = f"Merged {name} into the loaded model in {seconds:.1f} s, {result.patched:,} tensors{cached}."
        message += skipped
        message += (f" Saved {path}." if path else not_saved) + _warning_text(warnings)
        return MergeOutcome(name, recipe, self.live.history_id, seconds, path, message)

    def _patch(self, bound: BoundRecipe, name: str | None = None):
        """Model A loaded, the merge written into it and the host told its identity (`name`, else the
        automatic one); returns the engine's result and the name."""
        model, base = self.host.live, bound.primary.path
        if model.loaded_file() != base:
            self.progress = Progress(f"loading {os.path.basename(base)}")
            model.load_checkpoint(base)  # its load callback drops backups of the old model
        model.before_patch()
        self.progress = Progress("merging into the loaded model")
        # The same call a host without a Workbench makes (app/apply.py): one path for live merges.
        options = ApplyOptions(self._engine(), self.backup, model.skip_prefixes())
        result = apply_recipe(bound, model.patch_target(), options=options)
        recipe = result.recipe
        name = name or auto_name(recipe.root, recipe.digest)
        metadata = {"alloy_recipe": recipe.text, "alloy_recipe_hash": recipe.digest}
        model.set_identity(MergeIdentity(name, recipe.digest, base, metadata))
        return result, name

    def _merge_to_file(self, bound: BoundRecipe, request: MergeRequest, started: float) -> MergeOutcome:
        """Hosts that cannot patch write the merge; a WebUI among them then loads the file ("save and load")."""
        self.progress = Progress("reading the inputs")
        recipe = hashed_recipe(bound, self.progress_event)  # the automatic file name needs the hash first
        warnings: list[str] = []
        settings = self._settings(request)
        path, row = self._save(bound, recipe, request.save or SaveRequest(), settings, warnings)
        name = os.path.splitext(os.path.basename(path))[0]
        history_id = row.id if row else 0
        message = f"Saved {path}"
        if self.host.live is not None:  # save and load: the written merge is loaded, else its new file removed
            fresh = not (request.save and request.save.overwrite)  # an overwrite may have replaced a file
            with self._exclusive(), loaded_or_removed(path, fresh, self.host.refresh_checkpoints):
                self.host.live.load_checkpoint(path)
            self.live = LiveMerge(name, recipe, history_id, bound.primary.path, path)
            message += " and selected it"
        seconds = time.perf_counter() - started
        message += f" in {seconds:.1f} s." + _warning_text(warnings)
        return MergeOutcome(name, recipe, history_id, seconds, path, message)

    def _save(
        self,
        bound: BoundRecipe,
        recipe: HashedRecipe,
        save: SaveRequest,
        settings: dict,
        warnings: list[str],
        name: str = "",
    ) -> tuple[str, HistoryRow | None]:
        """Write the bound merge to a file in the save folder and log its row."""
        if save.format not in EXTENSIONS:
            raise ParameterError(f"unknown format {save.format!r}; use safetensors or ckpt")
        folder = self.host.save_folder()
        file_name = (
            custom_file_name(save.name, save.format)
            if save.name.strip()
            else (auto_name(recipe.root, recipe.digest) + EXTENSIONS[save.format])
        )
        target = os.path.join(folder, file_name)
        if not inside_folder(target, folder):
            raise UnsafePathError(f"{target} is outside the checkpoint folder {folder}")
        self.progress = Progress(f"saving {os.path.basename(target)}")
        job = SaveJob(target, save, settings, self.host.config().save_dtype, row_name=name)
        result, row = save_and_log(bound, job, self._engine(), folder, self.history_path(), _warn_into(warnings))
        warnings.extend(f"Note: {note}" for note in result.notes)
        self.host.refresh_checkpoints()  # the new file is listed
        return result.path, row

    def _settings(self, request: MergeRequest) -> dict:
        """The history's settings column of a request (the CLI writes the same record)."""
        form = None if (request.recipe or "").strip() else request.settings  # typed text: the recipe is the record
        return settings_record(
            form,
            save=request.save,
            device=self.host.config().device,
            **request.ui,
        )

    def history_path(self) -> Path:
        configured = self.host.config().history_file
        return Path(configured) if configured else history_file()

    def _engine(self) -> EngineOptions:
        config = self.host.config()

        return EngineOptions(
            device=config.device,
            compute_dtype=parse_compute_dtype(config.compute_dtype),
            cancel=self._cancel,
            cache=self.cache(),
            progress=self.progress_event,
        )

    def progress_event(self, event: ProgressEvent) -> None:
        self.progress.update(event)

    # -- the other buttons --------------------------------------------------------------------
    def restore(self) -> str:
        self.hold.check()
        with self._lock, self._exclusive():
            live = patchable(self.host)
            if live is None:
                return self._select_base()
            model = live.patch_target()
            if model is None or not self.backup.patched:
                if self.live is not None:  # a merge that changed no tensor still named the model: drop the name
                    live.clear_identity()
                self.live = None
                return "Nothing to restore: the loaded model is not patched."
            live.before_patch()
            count = self.backup.restore(model)
            self.live = None
            live.clear_identity()
            return f"Restored {count} tensors: the loaded model is model A again."

    def _select_base(self) -> str:
        live, self.live = self.live, None
        if live is None or self.host.live is None:
            return "Nothing to restore: no merge is loaded."
        self.host.live.load_checkpoint(live.base_path)
        return f"Selected model A ({os.path.basename(live.base_path)}) again."

    def save_current(self, save: SaveRequest) -> str:
        """Run the live merge's recipe again into a file (the same bits for the same dtype)."""
        live = self.live
        if live is None:
            raise ParameterError("The loaded model is not an Alloy merge")
        if live.path and not save.name.strip() and os.path.isfile(live.path):
            return live.path  # loaded from this file: it is saved already
        with self._lock:
            self._cancel = CancelToken()
            try:
                # The live merge's hashed recipe, bound again: its files were closed after the merge.
                with bind_recipe(live.recipe.root, self.host.save_folder()) as bound:
                    settings = {"saved_from_history_id": live.history_id}
                    return self._save(bound, live.recipe, save, settings, [], live.name)[0]
            finally:
                self.progress = Progress()

    def generate(self, gen: GenSettings) -> GenResult:
        generation = self.host.generation
        if generation is None:
            raise ParameterError("this host cannot generate images (standalone app): save the merge instead")
        self.hold.check()
        with self._lock, self._exclusive():
            generation.before_generate()  # a checkpoint chosen since the merge loads now, ending it
            extra = {}
            if self.live is not None:
                extra = {"Alloy recipe": self.live.recipe_hash[:10], "Alloy history": str(self.live.history_id)}
                live = patchable(self.host)
                if live is not None:  # the host's refresh may have dropped the entry
                    live.set_identity(MergeIdentity(self.live.name, self.live.recipe_hash, self.live.base_path))
            return generation.generate(gen, extra)

    def _exclusive(self) -> contextlib.AbstractContextManager:
        """The host's job lock while the live model changes or generates (none without a live model)."""
        return self.host.live.exclusive() if self.host.live is not None else contextlib.nullcontext()

    def file_job(self, stage: str, work: Callable[[Callable[[int, int], None]], T]) -> T:
        """Work on files that leaves the loaded model alone (LoRA files, the Toolkit, an analysis): one job
        at a time beside merges, with its progress shown; `work(step)` reports (done, total)."""
        if not self._lock.acquire(blocking=False):
            raise BusyError("a merge is running")
        try:
            self._cancel = CancelToken()
            self.progress = Progress(stage)

            def step(done: int, total: int) -> None:
                self.progress_event(ProgressEvent("items", done, total, "keys"))

            return work(step)
        finally:
            self.progress = Progress()
            self._lock.release()

    def _stopping(self) -> bool:
        return self._cancel.cancelled

    def autoprune_at_start(self) -> list[str]:
        """The host's "autoprune at start" folder pruned (nothing when the setting is empty)."""
        folder = self.host.config().autoprune_folder.strip()
        if not folder:
            return []
        try:
            return self.file_job("autoprune", lambda step: run_autoprune(folder, self.host)).splitlines()
        except AlloyError as e:
            return [f"autoprune: {e}"]

    def busy(self) -> bool:
        """Whether a merge (or a save) holds the live model now."""
        return self._lock.locked()

    def stop(self) -> str:
        self._cancel.cancel()
        if self.host.generation is not None:
            self.host.generation.interrupt()
        return "Stopping…"

    # -- cache ----------------------------------------------------------------------------------
    def cache(self) -> TensorCache | None:
        """The RAM cache as the setting asks; kept while the setting's text stays the same
        ("auto" is sized once, not again at every merge as the free memory moves)."""
        setting = str(self.host.config().cache_budget).strip().lower()
        if self._cache is None or self._cache_setting != setting:
            budget = parse_cache_budget(setting)
            self._cache = TensorCache(budget) if budget else None
            self._cache_setting = setting
        return self._cache

    def cache_stats(self) -> CacheStats | None:
        return self._cache.stats() if self._cache else None

    def clear_cache(self) -> str:
        if self._cache:
            self._cache.clear()
        return "Cache cleared."


def _warning_text(lines: list[str]) -> str:
    """Notes and warnings ("Warning: …", "Note: …") appended to a result message."""
    return "".join(f" {line.rstrip('.')}." for line in lines)


def _warn_into(lines: list[str]):
    return lambda text: lines.append(f"Warning: {text}")
