"""The AUTOMATIC1111 WebUI (v1.7–1.10) as an Alloy host; the WebUI internals it relies on are named where used.

Every WebUI module is imported inside the methods, at call time: this file imports without the
WebUI, and the tests run it against a double of the objects it touches.
"""

from __future__ import annotations

import contextlib
import functools
import os
from dataclasses import fields

import torch

from lib_merge.app.ports import GenResult, GenSettings, HostConfig, MergeIdentity
from lib_merge.errors import ModelNotFoundError, UnsafePathError
from lib_merge.paths import inside_folder

OPTION_PREFIX = "alloy_"
VIRTUAL_SUFFIX = ".alloy-merge"

# txt2img component elem_id -> GenSettings field (elem_ids verified on v1.10.1)
TXT2IMG_ELEM_IDS = {
    "txt2img_prompt": "prompt",
    "txt2img_neg_prompt": "negative_prompt",
    "txt2img_styles": "styles",
    "txt2img_steps": "steps",
    "txt2img_sampling": "sampler",
    "txt2img_scheduler": "scheduler",
    "txt2img_cfg_scale": "cfg_scale",
    "txt2img_width": "width",
    "txt2img_height": "height",
    "txt2img_batch_size": "batch_size",
    "txt2img_batch_count": "n_iter",
    "txt2img_seed": "seed",
    "txt2img_subseed": "subseed",
    "txt2img_subseed_strength": "subseed_strength",
    "txt2img_hr-checkbox": "enable_hr",
    "txt2img_hr_upscaler": "hr_upscaler",
    "txt2img_hires_steps": "hr_second_pass_steps",
    "txt2img_denoising_strength": "denoising_strength",
    "txt2img_hr_scale": "hr_scale",
}
DEFAULT_GEN = GenSettings(
    prompt="",
    negative_prompt="",
    steps=20,
    sampler="Euler a",
    scheduler="Automatic",
    cfg_scale=7.0,
    seed=-1,
    subseed=-1,
    subseed_strength=0.0,
    width=512,
    height=512,
    batch_size=1,
    n_iter=1,
    enable_hr=False,
    hr_scale=2.0,
    hr_upscaler="Latent",
    hr_second_pass_steps=0,
    denoising_strength=0.7,
    styles=[],
)


class A1111Host:
    name = "a1111"
    can_generate = True
    can_patch = True

    @property
    def supermerger_history(self) -> str:
        """SuperMerger's history file when one is installed, for the History tab's import field."""
        for folder in self.supermerger_folders():
            path = os.path.join(folder, "mergehistory.csv")
            if os.path.isfile(path):
                return path
        return ""

    def supermerger_folders(self) -> list[str]:
        """Installed extensions whose folder name says SuperMerger (it keeps mergehistory.csv there)."""
        return [path for path in _extension_folders() if "supermerger" in os.path.basename(path).lower()]

    def lora_preset_files(self) -> list[str]:
        """lbwpresets.txt of an installed LoRA Block Weight extension (in its scripts folder)."""
        found = [os.path.join(path, "scripts", "lbwpresets.txt") for path in _extension_folders()]
        return [path for path in found if os.path.isfile(path)]

    def __init__(self) -> None:
        self.components: dict[str, object] = {}  # txt2img components by elem_id, from after_component
        self.last_run: GenSettings | None = None  # the user's last txt2img run, from before_process
        self._entry = None  # the synthetic CheckpointInfo of the live merge
        self._base_entry = None  # model A's CheckpointInfo
        self._held = None  # the live merge a txt2img run's checkpoint override displaced, until merged again
        self._displacing = False  # the next model load is that run's override: the merge's entry stays

    # -- options -----------------------------------------------------------------------------
    def config(self) -> HostConfig:
        from modules import shared

        defaults = HostConfig(cache_budget="auto")
        values = {
            f.name: shared.opts.data.get(OPTION_PREFIX + f.name, getattr(defaults, f.name)) for f in fields(HostConfig)
        }
        return HostConfig(**{k: str(v) for k, v in values.items()})

    # -- checkpoints -------------------------------------------------------------------------
    def model_folders(self) -> list[str]:
        from modules import sd_models, shared

        folders = [sd_models.model_path]
        if getattr(shared.cmd_opts, "ckpt_dir", None):
            folders.append(os.path.abspath(shared.cmd_opts.ckpt_dir))
        return folders

    def checkpoint_titles(self) -> list[str]:
        from modules import sd_models

        return [t for t, info in sd_models.checkpoints_list.items() if info is not self._entry]

    def selected_checkpoint(self) -> str | None:
        from modules import sd_models, shared

        title = shared.opts.data.get("sd_model_checkpoint")
        info = sd_models.checkpoint_aliases.get(title) if title else None
        if info is not None and info is self._entry:  # the live merge: its model A
            info = self._base_entry
        return info.title if info is not None and info.title in sd_models.checkpoints_list else None

    def refresh_checkpoints(self) -> None:
        from modules import sd_models

        sd_models.list_models()  # wrapped by connect(): the live merge stays listed

    def resolve_checkpoint(self, title: str) -> str:
        """Entries the WebUI lists are trusted as they are (symlinks included); any other name must
        lie inside the checkpoint folders."""
        from modules import sd_models

        info = sd_models.checkpoint_aliases.get(title) or sd_models.get_closet_checkpoint_match(title)
        if info is not None and info is self._entry:
            raise ModelNotFoundError(f"{title!r} is the live merge, not a file: choose the models it came from")
        if info is not None:
            path = os.path.abspath(info.filename)
        else:
            path = os.path.abspath(os.path.join(sd_models.model_path, title))
            if not any(inside_folder(path, folder, follow_links=False) for folder in self.model_folders()):
                raise UnsafePathError(f"{title!r} points outside the WebUI's checkpoint folders")
        if not os.path.isfile(path):
            raise ModelNotFoundError(f"checkpoint not found: {title!r}")
        return path

    def vae_folder(self) -> str:
        """--vae-dir when it is a folder, else models/VAE (as the WebUI's VAE list looks)."""
        from modules import paths, shared

        given = getattr(shared.cmd_opts, "vae_dir", None)
        return given if given and os.path.isdir(given) else os.path.join(paths.models_path, "VAE")

    def lora_folder(self) -> str:
        from modules import paths, shared

        return getattr(shared.cmd_opts, "lora_dir", None) or os.path.join(paths.models_path, "Lora")

    def save_folder(self) -> str:
        return self.model_folders()[-1] if len(self.model_folders()) > 1 else self.model_folders()[0]

    def grid_folder(self) -> str:
        from modules import shared

        return shared.opts.outdir_grids or shared.opts.outdir_txt2img_grids

    def font_path(self) -> str | None:
        try:
            from modules.paths_internal import roboto_ttf_file
        except ImportError:
            return None
        return roboto_ttf_file if os.path.isfile(roboto_ttf_file) else None

    # -- the live model ----------------------------------------------------------------------
    def _sd_model(self):
        from modules import sd_models

        return sd_models.model_data.sd_model

    def live_model(self) -> torch.nn.Module | None:
        return self._sd_model()

    def loaded_file(self) -> str | None:
        model = self._sd_model()
        if model is None:
            return None
        info = self._base_entry if self.is_ours(model) else getattr(model, "sd_checkpoint_info", None)
        return os.path.abspath(info.filename) if info is not None else None

    def is_ours(self, model) -> bool:
        return self._entry is not None and getattr(model, "sd_checkpoint_info", None) is self._entry

    def load_checkpoint(self, path: str) -> None:
        from modules import sd_models

        info = next(
            (i for i in sd_models.checkpoints_list.values() if os.path.abspath(i.filename) == path), None
        ) or sd_models.CheckpointInfo(path)
        sd_models.reload_model_weights(info=info)

    def exclusive(self):
        """The WebUI's queue lock: no txt2img job runs while the live model changes."""
        try:
            from modules.call_queue import queue_lock
        except ImportError:
            return contextlib.nullcontext()
        return queue_lock

    def before_patch(self) -> None:
        """Take the built-in LoRA extension's delta out and drop its backups (docs/WEBUI.md §5)."""
        try:
            import networks
        except ImportError:
            return
        model = self._sd_model()
        with torch.no_grad():
            for module in model.modules():
                if (
                    getattr(module, "network_weights_backup", None) is not None
                    or getattr(module, "network_bias_backup", None) is not None
                ):
                    networks.network_restore_weights_from_backup(module)
            for module in model.modules():
                if hasattr(module, "network_current_names"):
                    networks.network_reset_cached_weight(module)

    def before_generate(self) -> None:
        pass  # a checkpoint choice loads at once in A1111

    def skip_prefixes(self) -> tuple[str, ...]:
        from modules import sd_vae

        return ("first_stage_model.",) if getattr(sd_vae, "loaded_vae_file", None) else ()

    # -- identity ----------------------------------------------------------------
    def set_identity(self, identity: MergeIdentity) -> None:
        from modules import sd_models, shared

        model = self._sd_model()
        if self._entry is None or self._entry.sha256 != identity.recipe_hash:
            if self._entry is None:
                self._base_entry = model.sd_checkpoint_info
            self._unregister()
            self._entry = self._make_entry(identity)
        entry = self._entry
        model.sd_checkpoint_info = entry
        model.sd_model_checkpoint = entry.filename
        model.sd_model_hash = entry.shorthash
        entry.register()
        self._held = None  # merged again, or replaced by a new merge
        # Directly in the data: opts.set would run the onchange reload (docs/WEBUI.md §3).
        shared.opts.data["sd_model_checkpoint"] = self._option_value(entry)
        shared.opts.data["sd_checkpoint_hash"] = entry.sha256
        assert sd_models.checkpoint_aliases.get(entry.title) is entry

    def _option_value(self, entry) -> str:
        """How the WebUI's checkpoint dropdown names an entry, so the dropdown shows the option's value."""
        from modules import shared

        return entry.short_title if shared.opts.data.get("sd_checkpoint_dropdown_use_short") else entry.title

    def _make_entry(self, identity: MergeIdentity):
        from modules import sd_models

        short = identity.recipe_hash[:10]
        folder = os.path.dirname(identity.base_path)
        entry = sd_models.CheckpointInfo(os.path.join(folder, identity.name + VIRTUAL_SUFFIX))
        entry.name = identity.name + ".safetensors"
        entry.name_for_extra = identity.name
        entry.model_name = identity.name
        entry.hash = identity.recipe_hash[:8]
        entry.sha256 = identity.recipe_hash
        entry.shorthash = short
        entry.title = f"{entry.name} [{short}]"
        entry.short_title = f"{identity.name} [{short}]"
        entry.ids = [entry.title, entry.name, identity.name, entry.short_title, short, identity.recipe_hash]
        entry.metadata = dict(identity.metadata)
        entry.calculate_shorthash = lambda: short  # never hash the virtual file
        entry.alloy_merge = True
        return entry

    def clear_identity(self) -> None:
        """Unregister the synthetic entry; if the model still wears it, give it model A's identity back.
        The load of a run's checkpoint override keeps the entry: the WebUI writes its name back afterwards."""
        if self._displacing:
            self._displacing = False
            return
        self._drop_identity()

    def _drop_identity(self) -> None:
        from modules import shared

        entry, base = self._entry, self._base_entry
        self._unregister()
        self._entry = self._base_entry = self._held = None
        if entry is None:
            return
        model = self._sd_model()
        if model is not None and model.sd_checkpoint_info is entry and base is not None:
            model.sd_checkpoint_info = base
            model.sd_model_checkpoint = base.filename
            model.sd_model_hash = base.shorthash
        if model is not None and self._names(entry):  # the option names what is loaded, never a gone merge
            shared.opts.data["sd_model_checkpoint"] = self._option_value(model.sd_checkpoint_info)
            shared.opts.data["sd_checkpoint_hash"] = model.sd_checkpoint_info.sha256

    def list_entry(self) -> None:
        """Register the live merge's entry again after the WebUI rebuilt its checkpoint tables."""
        if self._entry is not None:
            self._entry.register()

    def _names(self, entry) -> bool:
        """Whether the checkpoint option names `entry`."""
        from modules import sd_models, shared

        title = shared.opts.data.get("sd_model_checkpoint")
        return bool(title) and (title in entry.ids or sd_models.checkpoint_aliases.get(title) is entry)

    def _unregister(self) -> None:
        from modules import sd_models

        if self._entry is None:
            return
        for table in (sd_models.checkpoints_list, sd_models.checkpoint_aliases):
            for key in [k for k, v in table.items() if v is self._entry]:
                del table[key]

    def after_save(self, path: str) -> None:
        self.refresh_checkpoints()

    # -- generation ----------------------------------------------------------------
    def before_process(self, p, workbench) -> None:
        """At the start of every txt2img run: the user's settings, and the live merge when the run loads
        another checkpoint for itself (`override_settings`, sent by many API clients with every request):
        the WebUI then loads that checkpoint and afterwards only writes the merge's name back into its
        options (docs/WEBUI.md §9), so the merge is held and `after_process` merges it again. A merge an
        earlier run displaced and never got back (the run failed) comes back now if the options name it."""
        self.capture_run(p)
        self._displacing = False
        if self._held is not None:
            if self._entry is not None and self._names(self._entry):
                self._bring_back(workbench)
            elif workbench.live is None:
                self._drop_identity()  # another checkpoint was chosen since: the merge stays gone
        wanted = (getattr(p, "override_settings", None) or {}).get("sd_model_checkpoint")
        if workbench.live is None or self._entry is None or wanted is None:
            return
        from modules import sd_models

        entry = sd_models.checkpoint_aliases.get(wanted)
        if entry is not None and entry is not self._entry and getattr(p, "override_settings_restore_afterwards", True):
            self._held, self._displacing = workbench.live, True

    def after_process(self, p, workbench) -> None:
        """At the end of a txt2img run (its scripts' postprocess): the merge a checkpoint override displaced
        is merged again, so the options the WebUI writes back name a merge that is loaded."""
        self._displacing = False
        if self._held is not None:
            self._bring_back(workbench)

    def _bring_back(self, workbench) -> None:
        """Merge the held merge again (held on while Alloy is busy); if that fails, let go of it so the
        options name what is loaded."""
        try:
            back = workbench.bring_back(self._held)
        except Exception:
            self._drop_identity()
            raise
        if back:
            self._held = None

    def capture_run(self, p) -> None:
        """before_process of the user's own txt2img runs: their settings, for the fallback."""
        if getattr(p, "alloy_run", False):
            return
        self.last_run = GenSettings(
            prompt=p.prompt,
            negative_prompt=p.negative_prompt,
            steps=p.steps,
            sampler=p.sampler_name,
            scheduler=getattr(p, "scheduler", None),
            cfg_scale=p.cfg_scale,
            seed=p.seed,
            subseed=p.subseed,
            subseed_strength=p.subseed_strength,
            width=p.width,
            height=p.height,
            batch_size=p.batch_size,
            n_iter=p.n_iter,
            enable_hr=getattr(p, "enable_hr", False),
            hr_scale=getattr(p, "hr_scale", None),
            hr_upscaler=getattr(p, "hr_upscaler", None),
            hr_second_pass_steps=getattr(p, "hr_second_pass_steps", None),
            denoising_strength=getattr(p, "denoising_strength", None),
            styles=list(getattr(p, "styles", []) or []),
            override_settings=dict(getattr(p, "override_settings", {}) or {}),
            script_args=tuple(p.script_args) if getattr(p, "script_args", None) is not None else None,
        )

    def gen_components(self) -> tuple[list[str], list[object], list[str]]:
        """(GenSettings fields, their txt2img components, elem_ids not found) for the Gen button's inputs."""
        names, comps, missing = [], [], []
        for elem_id, name in TXT2IMG_ELEM_IDS.items():
            if elem_id in self.components:
                names.append(name)
                comps.append(self.components[elem_id])
            else:
                missing.append(elem_id)
        return names, comps, missing

    def script_components(self) -> list[object]:
        """The inputs of every txt2img script (ControlNet and the like), as the txt2img button gets them."""
        try:
            from modules import scripts
        except ImportError:
            return []
        runner = getattr(scripts, "scripts_txt2img", None)
        return [c for c in getattr(runner, "inputs", []) if c is not None] if runner else []

    def base_settings(self) -> GenSettings:
        """The last txt2img run (or defaults) under whatever the UI hands over."""
        return DEFAULT_GEN.overlay(self.last_run) if self.last_run else GenSettings(**DEFAULT_GEN.__dict__)

    def generate(self, gen: GenSettings, extra_info: dict[str, str]) -> GenResult:
        from modules import processing, scripts, shared

        p = processing.StableDiffusionProcessingTxt2Img(
            sd_model=shared.sd_model,
            outpath_samples=shared.opts.outdir_samples or shared.opts.outdir_txt2img_samples,
            outpath_grids=shared.opts.outdir_grids or shared.opts.outdir_txt2img_grids,
            prompt=gen.prompt or "",
            negative_prompt=gen.negative_prompt or "",
            styles=list(gen.styles or []),
            steps=int(gen.steps),
            sampler_name=gen.sampler,
            scheduler=gen.scheduler,
            cfg_scale=float(gen.cfg_scale),
            seed=int(gen.seed),
            subseed=int(gen.subseed if gen.subseed is not None else -1),
            subseed_strength=float(gen.subseed_strength or 0),
            width=int(gen.width),
            height=int(gen.height),
            batch_size=int(gen.batch_size),
            n_iter=int(gen.n_iter),
            enable_hr=bool(gen.enable_hr),
            hr_scale=float(gen.hr_scale or 2.0),
            hr_upscaler=gen.hr_upscaler,
            hr_second_pass_steps=int(gen.hr_second_pass_steps or 0),
            denoising_strength=gen.denoising_strength,
            override_settings=dict(gen.override_settings or {}),
            do_not_save_samples=not gen.save_images,
            do_not_save_grid=not gen.save_images,
        )
        p.alloy_run = True
        # Marked as an API run before the scripts are set, so the always-on sampler and seed
        # scripts keep these values instead of their UI defaults (docs/WEBUI.md §6).
        p.is_api = True
        runner = getattr(scripts, "scripts_txt2img", None)
        if runner is not None:
            p.scripts = runner
            p.script_args = tuple(gen.script_args) if gen.script_args else self._default_script_args(runner)
        p.extra_generation_params.update(extra_info)
        shared.state.begin(job="alloy")
        try:
            with contextlib.closing(p):
                processed = processing.process_images(p)
        finally:
            shared.state.end()
        infotexts = getattr(processed, "infotexts", None) or [processed.info]
        return GenResult(list(processed.images), infotexts[0])

    def _default_script_args(self, runner) -> tuple:
        import gradio as gr

        last = max([1] + [s.args_to for s in runner.scripts])
        args: list = [None] * last
        args[0] = 0
        with gr.Blocks():
            for script in runner.scripts:
                controls = script.ui(script.is_img2img)
                if controls:
                    args[script.args_from : script.args_to] = [c.value for c in controls]
        return tuple(args)

    def interrupt(self) -> None:
        from modules import shared

        shared.state.interrupt()


def connect(workbench) -> None:
    """Register the WebUI callbacks the workbench depends on (called at script load)."""
    from modules import script_callbacks

    host = workbench.host
    script_callbacks.on_model_loaded(lambda model: workbench.model_loaded(host.is_ours(model)))
    _keep_listed(host)


def _keep_listed(host: A1111Host) -> None:
    """The WebUI's `list_models()` rebuilds its checkpoint tables from disk (its Refresh button; Forge at
    every page load) and so drops the live merge's entry, which its dropdown and its option write-back
    need: wrap it once so the entry is registered again after each listing."""
    from modules import sd_models

    listing = getattr(sd_models.list_models, "__wrapped__", sd_models.list_models)

    @functools.wraps(listing)
    def list_models(*args, **kwargs):
        found = listing(*args, **kwargs)
        host.list_entry()
        return found

    sd_models.list_models = list_models


def _extension_folders() -> list[str]:
    """The folders of the installed extensions, sorted by name."""
    from modules import paths

    root = os.path.join(paths.script_path, "extensions")
    try:
        names = sorted(os.listdir(root))
    except OSError:
        return []
    return [os.path.join(root, n) for n in names if os.path.isdir(os.path.join(root, n))]
