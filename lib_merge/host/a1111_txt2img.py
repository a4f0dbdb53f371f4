"""txt2img runs in AUTOMATIC1111 (and Forge): the user's last run's settings, the txt2img tab's components,
and Alloy's own generations through the WebUI's processing (docs/WEBUI.md §6).

WebUI modules are imported at call time, as in a1111.py.
"""

from __future__ import annotations

import contextlib

from lib_merge.app.ports import GenResult, GenSettings

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


class Txt2ImgRuns:
    """Generation with the WebUI's txt2img: needs `self.components` (elem_id -> component) and `self.last_run`."""

    def capture_run(self, p) -> None:
        """before_process of the user's own txt2img runs: their settings, for the fallback. API runs (another
        program's, or a driver of several WebUIs) are not the user's settings."""
        if getattr(p, "alloy_run", False) or getattr(p, "is_api", False):
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

    def sampler_names(self) -> list[str]:
        from modules import sd_samplers

        return list(getattr(sd_samplers, "all_samplers_map", {}))

    def interrupt(self) -> None:
        from modules import shared

        shared.state.interrupt()
