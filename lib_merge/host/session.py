"""The workbench: merge, restore, save, generate and log, the same for every host and surface.

The Gradio tabs, the HTTP API and the tests all call this one object with dataclasses. It owns
the live merge's state (backups, recipe, history id), one lock for the live model, the source
cache and the cancel token; everything host-specific goes through the Host protocol.
"""

from __future__ import annotations

import os
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

from lib_merge.cache import CacheStats, TensorCache
from lib_merge.engine.bind import canonical_recipe
from lib_merge.engine.run import CancelToken, EngineOptions
from lib_merge.errors import AlloyError, BusyError, ParameterError, UnsafePathError
from lib_merge.history import HistoryRow, append_history, history_file
from lib_merge.host.base import GenResult, GenSettings, Host, MergeIdentity
from lib_merge.io.dtypes import parse_output_dtype
from lib_merge.live import LiveBackup, merge_into_model
from lib_merge.merge import SaveOptions, merge_to_file
from lib_merge.naming import EXTENSIONS, auto_name, custom_file_name, inside_folder
from lib_merge.recipe import parse_recipe
from lib_merge.recipe.nodes import ModelRef, Node, primary_model, replace_models, walk_models
from lib_merge.settings import MergeSettings, build_recipe

AUTO_CACHE_CAP = 16 * 2**30


@dataclass
class SaveRequest:
    name: str = ""  # custom file name; empty: the automatic name
    dtype: str = "fp16"
    format: str = "safetensors"
    prune: bool = True
    overwrite: bool = False


@dataclass
class MergeRequest:
    settings: MergeSettings | None = None
    recipe: str | None = None  # recipe text (typed or edited by hand) instead of settings
    save: SaveRequest | None = None  # also write the merge to a file
    ui: dict = field(default_factory=dict)  # further UI settings to log in history
    wait: bool = True  # False: fail at once when another merge holds the live model


@dataclass
class MergeOutcome:
    name: str
    recipe_hash: str
    recipe_text: str
    history_id: int
    seconds: float
    path: str | None
    message: str


@dataclass
class LiveMerge:
    name: str
    recipe_text: str
    recipe_hash: str
    history_id: int
    base_path: str
    path: str | None = None  # the file, on hosts that load merges from files (save and load)


@dataclass
class Progress:
    done: int = 0
    total: int = 0
    phase: str = "idle"

    def text(self) -> str:
        if self.phase == "idle" or not self.total:
            return self.phase
        return f"{self.phase}: {self.done}/{self.total} keys"


def parse_cache_budget(text: str) -> int:
    """ "auto" = 25% of the available RAM capped at 16 GiB; otherwise GiB as a number (0 = off)."""
    value = str(text).strip().lower()
    if value in ("", "0", "off"):
        return 0
    if value == "auto":
        try:
            available = os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
        except (ValueError, OSError, AttributeError):
            available = 8 * 2**30
        return min(available // 4, AUTO_CACHE_CAP)
    try:
        gib = float(value)
    except ValueError:
        raise ParameterError(f"cache budget must be 'auto' or a number of GiB, not {text!r}") from None
    if gib < 0:
        raise ParameterError(f"cache budget must not be negative: {text!r}")
    return int(gib * 2**30)


class Workbench:
    def __init__(self, host: Host):
        self.host = host
        self.backup = LiveBackup()
        self.live: LiveMerge | None = None
        self.progress = Progress()
        self._lock = threading.Lock()
        self.plot_lock = threading.Lock()  # one XYZ plot at a time: its merges and generations must not interleave
        self._cancel = CancelToken()
        self._cache: TensorCache | None = None

    # -- state the host reports -------------------------------------------------------------
    def model_loaded(self, ours: bool) -> None:
        """The host loaded a model: backups of the old one are void unless the load was our own identity."""
        if not self.host.can_patch:  # save and load: the merge is loaded while its file is selected
            if self.live is not None and self.host.loaded_file() != self.live.path:
                self.live = None
            return
        if not ours:
            self.backup = LiveBackup()
            self.live = None
            self.host.clear_identity()

    # -- merging ----------------------------------------------------------------------------
    def recipe_of(self, request: MergeRequest) -> Node:
        if request.recipe and request.recipe.strip():
            root = parse_recipe(request.recipe)
        elif request.settings is not None:
            root = build_recipe(request.settings)
        else:
            raise ParameterError("nothing to merge: give settings or a recipe")
        return replace_models(root, lambda ref: ModelRef(self.host.resolve_checkpoint(ref.path), ref.sha256))

    def merge(self, request: MergeRequest) -> MergeOutcome:
        if not self._lock.acquire(blocking=request.wait):
            raise BusyError("a merge is running")
        try:
            self._cancel = CancelToken()
            started = time.perf_counter()
            root = self.recipe_of(request)
            if not self.host.can_patch:
                return self._merge_to_file(root, request, started)
            with self.host.exclusive():
                return self._merge_live(root, request, started)
        finally:
            self.progress = Progress()
            self._lock.release()

    def _merge_live(self, root: Node, request: MergeRequest, started: float) -> MergeOutcome:
        base = primary_model(root).path
        if self.host.loaded_file() != base:
            self.host.load_checkpoint(base)  # its load callback drops backups of the old model
        self.host.before_patch()
        result = merge_into_model(
            root,
            self.host.live_model(),
            self.backup,
            self._engine(),
            self.host.save_folder(),
            self.host.skip_prefixes(),
        )
        name = auto_name(parse_recipe(result.recipe_text), result.recipe_hash)
        metadata = {"alloy_recipe": result.recipe_text, "alloy_recipe_hash": result.recipe_hash}
        self.host.set_identity(MergeIdentity(name, result.recipe_hash, base, metadata))
        self.live = LiveMerge(name, result.recipe_text, result.recipe_hash, 0, base)
        path, not_saved = None, ""
        if request.save:  # the merge stands even when saving fails; the message says why
            try:
                path = self._save(parse_recipe(result.recipe_text), result.recipe_hash, request.save)
            except AlloyError as e:
                not_saved = f" Not saved: {e}"
        row = self._log(name, result.recipe_hash, result.recipe_text, request, path)
        self.live.history_id = row.id
        seconds = time.perf_counter() - started
        skipped = " VAE: external VAE kept." if self.host.skip_prefixes() else ""
        message = f"Merged {name} into the loaded model: {result.patched} tensors in {seconds:.1f} s.{skipped}"
        message += f" Saved {path}." if path else not_saved
        return MergeOutcome(name, result.recipe_hash, result.recipe_text, row.id, seconds, path, message)

    def _merge_to_file(self, root: Node, request: MergeRequest, started: float) -> MergeOutcome:
        """Hosts that cannot patch write the merge; a WebUI among them then loads the file ("save and load")."""
        text, digest = canonical_recipe(root, self.host.save_folder())
        path = self._save(parse_recipe(text), digest, request.save or SaveRequest())
        name = os.path.splitext(os.path.basename(path))[0]
        row = self._log(name, digest, text, request, path)
        message = f"Saved {path}"
        if self.host.can_generate:
            with self.host.exclusive():
                self.host.load_checkpoint(path)
            self.live = LiveMerge(name, text, digest, row.id, primary_model(root).path, path)
            message += " and selected it"
        seconds = time.perf_counter() - started
        return MergeOutcome(name, digest, text, row.id, seconds, path, f"{message} in {seconds:.1f} s.")

    def _save(self, root: Node, digest: str, save: SaveRequest) -> str:
        if save.format not in EXTENSIONS:
            raise ParameterError(f"unknown format {save.format!r}; use safetensors or ckpt")
        folder = self.host.save_folder()
        file_name = (
            custom_file_name(save.name, save.format)
            if save.name.strip()
            else (auto_name(root, digest) + EXTENSIONS[save.format])
        )
        target = os.path.join(folder, file_name)
        if not inside_folder(target, folder):
            raise UnsafePathError(f"{target} is outside the checkpoint folder {folder}")
        options = SaveOptions(
            output=target,
            dtype=parse_output_dtype(save.dtype),
            overwrite=save.overwrite,
            prune=save.prune,
            format=save.format,
        )
        self.progress.phase = "saving"
        result = merge_to_file(root, options, self._engine(), folder)
        self.host.after_save(result.path)
        return result.path

    def _log(self, name: str, digest: str, text: str, request: MergeRequest, path: str | None) -> HistoryRow:
        settings = dict(request.settings.as_dict()) if request.settings else {"recipe_edited": True}
        settings.update(request.ui)
        if request.save:
            settings["save"] = dict(request.save.__dict__)
        config = self.host.config()
        settings.setdefault("device", config.device)
        models = []
        for role, ref in zip("ABCDEFGHIJKLMNOP", walk_models(parse_recipe(text)), strict=False):
            models.append(f"{role}={os.path.basename(ref.path)} [{(ref.sha256 or '')[:10]}]")
        return append_history(name, digest, ";".join(models), settings, path or "not saved", text, self.history_path())

    def history_path(self) -> Path:
        configured = self.host.config().history_file
        return Path(configured) if configured else history_file()

    def _engine(self) -> EngineOptions:
        config = self.host.config()

        def progress(done: int, total: int, read: int, written: int, phase: str) -> None:
            self.progress = Progress(done, total, "merging")

        return EngineOptions(
            device=config.device,
            compute_dtype=parse_output_dtype(config.compute_dtype),
            cancel=self._cancel,
            cache=self.cache(),
            progress=progress,
        )

    # -- the other buttons --------------------------------------------------------------------
    def restore(self) -> str:
        with self._lock, self.host.exclusive():
            if not self.host.can_patch:
                return self._select_base()
            model = self.host.live_model()
            if model is None or not self.backup.patched:
                self.live = None
                return "Nothing to restore: the loaded model is not patched."
            self.host.before_patch()
            count = self.backup.restore(model)
            self.live = None
            self.host.clear_identity()
            return f"Restored {count} tensors: the loaded model is model A again."

    def _select_base(self) -> str:
        live, self.live = self.live, None
        if live is None or not self.host.can_generate:
            return "Nothing to restore: no merge is loaded."
        self.host.load_checkpoint(live.base_path)
        return f"Selected model A ({os.path.basename(live.base_path)}) again."

    def save_current(self, save: SaveRequest) -> str:
        """SPEC §6.7: run the live merge's recipe again into a file (the same bits for the same dtype)."""
        live = self.live
        if live is None:
            raise ParameterError("The loaded model is not an Alloy merge")
        if live.path and not save.name.strip() and os.path.isfile(live.path):
            return live.path  # loaded from this file: it is saved already
        with self._lock:
            self._cancel = CancelToken()
            try:
                return self._save(parse_recipe(live.recipe_text), live.recipe_hash, save)
            finally:
                self.progress = Progress()

    def generate(self, gen: GenSettings) -> GenResult:
        if not self.host.can_generate:
            raise ParameterError("this host cannot generate images (standalone app): save the merge instead")
        extra = {}
        if self.live is not None:
            extra = {"Alloy recipe": self.live.recipe_hash[:10], "Alloy history": str(self.live.history_id)}
        with self._lock, self.host.exclusive():
            if self.live is not None:
                self.host.set_identity(
                    MergeIdentity(self.live.name, self.live.recipe_hash, self.live.base_path)
                )  # the host's refresh may have dropped the entry
            return self.host.generate(gen, extra)

    def stop(self) -> str:
        self._cancel.cancel()
        self.host.interrupt()
        return "Stopping…"

    # -- cache ----------------------------------------------------------------------------------
    def cache(self) -> TensorCache | None:
        budget = parse_cache_budget(self.host.config().cache_budget)
        if budget == 0:
            self._cache = None
        elif self._cache is None or self._cache.budget != budget:
            self._cache = TensorCache(budget)
        return self._cache

    def cache_stats(self) -> CacheStats | None:
        return self._cache.stats() if self._cache else None

    def clear_cache(self) -> str:
        if self._cache:
            self._cache.clear()
        return "Cache cleared."
