"""Stable Diffusion WebUI Forge as an Alloy host: the merge goes into Forge's own component modules.

Forge builds a model as separate modules (UNet, VAE, text encoders; `sd_model.forge_objects`) and
converts checkpoint keys on the way; `forge_keys` traces that conversion with Forge's own code, so
each merged tensor lands where Forge would have put it when loading the merge from a file.
What differs from the A1111 adapter (facts seen in a real Forge, docs/FORGE.md):
- the model is (re)loaded by `forge_model_reload()` at the start of each generation when the
  string of `model_data.forge_loading_parameters` differs from `model_data.forge_hash`: the live
  merge adds its recipe hash to both, so generation keeps it, and any checkpoint choice (model A's
  included) changes the parameters and loads that checkpoint from disk;
- parameters are inference tensors (Forge loads under `torch.inference_mode`);
- Forge's LoRA loader replaces parameter objects while a LoRA is applied and keeps the originals:
  before a patch or a restore it is asked to put them back (`refresh` with no LoRA).
A Forge build without component modules falls back to "save and load": the merge is written to
the checkpoint folder and selected through Forge's own checkpoint switch.
"""

from __future__ import annotations

import importlib.util
import inspect
import os

import torch

from lib_merge.app.ports import MergeIdentity
from lib_merge.errors import AlloyError, HostPatchError, ModelNotFoundError
from lib_merge.host.a1111 import A1111Host
from lib_merge.host.forge_keys import ForgeModelView, trace_conversion
from lib_merge.io.source import SourceModel

MERGE_PARAMETER = "alloy_merge"  # the live merge's recipe hash in Forge's loading parameters
SAVE_AND_LOAD_SWITCH = "ALLOY_FORGE_SAVE_AND_LOAD"  # =1: save and load even where in place works


class ForgeHost(A1111Host):
    name = "forge"

    def __init__(self) -> None:
        super().__init__()
        self.can_patch = exposes_component_modules() and os.environ.get(SAVE_AND_LOAD_SWITCH, "") != "1"
        self._view_key = None  # (model, model A's path) the view below was made for
        self._view: ForgeModelView | None = None

    # -- checkpoints ---------------------------------------------------------------------------
    def load_checkpoint(self, path: str) -> None:
        """Select it through Forge's own switch; in place, also load it now (Forge would at the next generation)."""
        from modules import sd_models
        from modules_forge import main_entry

        info = self._entry_for(path)
        if info is None:
            sd_models.list_models()
            info = self._entry_for(path)
        if info is None:
            raise ModelNotFoundError(f"{path} is not in Forge's checkpoint list")
        choose_checkpoint(main_entry.checkpoint_change, info.title)
        if self.can_patch:
            sd_models.forge_model_reload()

    def _entry_for(self, path: str):
        from modules import sd_models

        target = os.path.abspath(path)
        return next((i for i in sd_models.checkpoints_list.values() if os.path.abspath(i.filename) == target), None)

    def loaded_file(self) -> str | None:
        if not self.can_patch:  # save and load: what is selected is what the next generation uses
            from modules import sd_models, shared

            info = sd_models.get_closet_checkpoint_match(shared.opts.data.get("sd_model_checkpoint", ""))
            return os.path.abspath(info.filename) if info is not None else None
        return super().loaded_file()

    # -- the live model ------------------------------------------------------------------------
    def patch_target(self) -> ForgeModelView | None:
        """Model A's checkpoint keys on Forge's component modules (made once per loaded model)."""
        if not self.can_patch:
            return None
        model = self._sd_model()
        modules = component_modules(model)
        path = self.loaded_file()
        if modules is None or path is None:
            return None
        key = (id(model), path)  # made from the file the model was loaded from; a new load clears it
        if self._view_key != key:
            source = SourceModel(path)
            try:
                infos = {k: source.info(k) for k in source.keys}  # Alloy's key -> the file's own entry
            finally:
                source.close()
            # Forge converts the keys as stored in the file; the view answers in Alloy's keys.
            traced = trace_conversion(model.model_config, {i.key: (i.shape, i.dtype) for i in infos.values()})
            ours = {i.key: k for k, i in infos.items()}
            placements = {ours[stored]: places for stored, places in traced.items()}
            self._view = ForgeModelView(modules, placements, {k: tuple(i.shape) for k, i in infos.items()})
            self._view_key = key
        return self._view

    def before_patch(self) -> None:
        """Have Forge's LoRA loader put the original parameters back (docs/FORGE.md): the merge and its
        backups must see model A's weights, and a LoRA applies on top at the next generation."""
        objects = getattr(self._sd_model(), "forge_objects_original", None)
        if objects is None:
            return
        for patcher in (objects.unet, getattr(objects.clip, "patcher", None), getattr(objects.vae, "patcher", None)):
            loader = getattr(patcher, "lora_loader", None)
            if loader is not None and loader.loaded_hash != str([]):
                loader.refresh(lora_patches={}, offload_device=patcher.offload_device)

    def before_process(self, p, workbench) -> None:
        self._keep_chosen_merge()
        super().before_process(p, workbench)

    def before_generate(self) -> None:
        """A checkpoint chosen in Forge's list since the merge (the choice rebuilt the loading parameters
        without the merge's mark) is loaded now, so the merge's identity is not put back over it."""
        from modules import sd_models

        if self.can_patch and self._entry is not None and not self._keep_chosen_merge():
            if MERGE_PARAMETER not in sd_models.model_data.forge_loading_parameters:
                sd_models.forge_model_reload()

    def _keep_chosen_merge(self) -> bool:
        """The live merge chosen again in Forge's list (which lists it, docs/FORGE.md) rebuilt the loading
        parameters around its entry, a file Forge cannot load: mark them as the loaded merge instead."""
        from modules import sd_models

        parameters = sd_models.model_data.forge_loading_parameters
        chosen = self.can_patch and self._entry is not None and self._held is None
        if not chosen or parameters.get("checkpoint_info") is not self._entry or MERGE_PARAMETER in parameters:
            return False
        self._mark_loading_parameters(self._base_entry, self._entry.sha256)
        return True

    def skip_prefixes(self) -> tuple[str, ...]:
        """Components Forge takes from its "VAE / Text Encoder" selection keep what it loaded there."""
        from modules import shared

        chosen = list(shared.opts.data.get("forge_additional_modules", []) or [])
        if not chosen:
            return ()
        prefixes: set[str] = set()
        for path in chosen:
            prefixes.update(_replaced_prefixes(path))
        return tuple(sorted(prefixes))

    # -- identity --------------------------------------------------------------------------------
    def set_identity(self, identity: MergeIdentity) -> None:
        if not self.can_patch:
            return  # the merge is a real file with its own entry
        base = self._base_entry if self._entry is not None else self._sd_model().sd_checkpoint_info
        super().set_identity(identity)
        self._mark_loading_parameters(base, identity.recipe_hash)

    def _option_value(self, entry) -> str:
        """Forge's checkpoint dropdown lists file names (or short titles), not A1111's titles."""
        from modules import shared

        return entry.short_title if shared.opts.data.get("sd_checkpoint_dropdown_use_short") else entry.name

    def clear_identity(self) -> None:
        if self.can_patch:
            self._view_key = self._view = None  # after a restore or another model's load: mapped again when needed
            super().clear_identity()

    def _drop_identity(self) -> None:
        """Also take the merge out of Forge's loading parameters: its mark, and its entry where Forge's
        option write-back put it (a file Forge cannot load) after a run that failed."""
        from modules import sd_models

        entry, base = self._entry, self._base_entry
        super()._drop_identity()
        data = sd_models.model_data
        parameters = data.forge_loading_parameters
        if MERGE_PARAMETER in parameters or (entry is not None and parameters.get("checkpoint_info") is entry):
            loaded = getattr(data.sd_model, "sd_checkpoint_info", None)
            self._mark_loading_parameters(loaded or base or parameters["checkpoint_info"], None)

    def _mark_loading_parameters(self, base, recipe_hash: str | None) -> None:
        """Forge reloads when str(loading parameters) != forge_hash: both now name model A plus the merge
        (or model A alone), so generation keeps the patch and any checkpoint choice reloads from disk."""
        from modules import sd_models

        data = sd_models.model_data
        parameters = {k: v for k, v in data.forge_loading_parameters.items() if k != MERGE_PARAMETER}
        parameters["checkpoint_info"] = base
        if recipe_hash is not None:
            parameters[MERGE_PARAMETER] = recipe_hash
        data.forge_loading_parameters = parameters
        data.forge_hash = str(parameters)


def choose_checkpoint(checkpoint_change, title: str) -> None:
    """Select a checkpoint as Forge's own dropdown does. Forge's switch is `checkpoint_change(ckpt_name,
    save=True, refresh=True)`; Forge Neo's also takes the UI preset the choice is made under
    (`checkpoint_change(ckpt_name, preset, save=True, refresh=True)`, kept as that preset's checkpoint,
    which Neo's page load shows again): Alloy passes the preset in use, as Neo's dropdown does."""
    from modules import shared

    if "preset" in inspect.signature(checkpoint_change).parameters:
        checkpoint_change(title, preset=getattr(shared.opts, "forge_preset", None))
    else:
        checkpoint_change(title)


def exposes_component_modules() -> bool:
    """Whether this Forge loads models through the component modules Alloy can patch (else: save and load)."""
    needed = ("backend.loader", "backend.state_dict", "backend.diffusion_engine.base")
    try:
        return all(importlib.util.find_spec(name) is not None for name in needed)
    except (ImportError, ValueError):
        return False


def component_modules(model) -> dict[str, torch.nn.Module] | None:
    """Forge's component name -> its torch module, for a loaded Forge model (None for anything else)."""
    objects = getattr(model, "forge_objects_original", None)
    config = getattr(model, "model_config", None)
    if objects is None or config is None:
        return None
    try:
        modules = {
            config.unet_target: objects.unet.model.diffusion_model,
            config.vae_target: objects.vae.first_stage_model,
        }
        clip_target = config.clip_target if isinstance(config.clip_target, dict) else {}
        for prefix, component in clip_target.items():
            modules[component] = getattr(objects.clip.cond_stage_model, prefix)  # a Module, not a ModuleDict
    except (AttributeError, KeyError, TypeError) as e:
        raise HostPatchError(f"this Forge model does not expose its component modules as expected ({e})") from None
    return modules


def _replaced_prefixes(path: str) -> set[str]:
    """Checkpoint prefixes that a file from Forge's "VAE / Text Encoder" list stands in for."""
    try:
        source = SourceModel(path)
    except (OSError, AlloyError):  # an unreadable module file: Forge reports it itself
        return set()
    try:
        keys = source.keys
    finally:
        source.close()
    found = set()
    if any("decoder." in k for k in keys):
        found.add("first_stage_model.")
    if any("text_model." in k or "resblocks." in k or "encoder.block." in k for k in keys):
        found.update(("cond_stage_model.", "conditioner.", "text_encoders."))
    return found


def is_forge() -> bool:
    return importlib.util.find_spec("modules_forge") is not None
