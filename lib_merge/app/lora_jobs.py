"""The LoRA jobs of the Workbench: bake LoRAs into the loaded model (a merge like any other), merge LoRAs
into one, extract one from two checkpoints (files in the LoRA folder, written beside the live model).

A mixin of Workbench: it uses the Workbench's host, live merge, `merge` and `file_job`.
"""

from __future__ import annotations

import os
import time

from lib_merge.app.lora import (
    extract_settings,
    find_lora,
    lora_output_name,
    lora_recipe,
    merge_settings,
    parse_lora_dtype,
    write_new_lora,
    written_text,
)
from lib_merge.app.ports import patchable
from lib_merge.app.requests import (
    LoraBakeRequest,
    LoraExtractRequest,
    LoraJob,
    LoraMergeRequest,
    LoraOutcome,
    MergeOutcome,
    MergeRequest,
)
from lib_merge.errors import OutputExistsError, ParameterError
from lib_merge.io.source import file_schema
from lib_merge.io.tempfiles import check_new_output
from lib_merge.lora.blocks import load_lora_presets
from lib_merge.lora.extract import extract_lora
from lib_merge.lora.merge import merge_loras
from lib_merge.recipe.nodes import ModelRef, Node, primary_model


class LoraJobs:
    def bake_loras(self, request: LoraBakeRequest) -> MergeOutcome:
        """LoRAs onto the loaded model: on top of the live merge when there is one (its recipe, one bind),
        else onto the loaded checkpoint; `model` names another checkpoint instead."""
        live = self.live if patchable(self.host) is not None else None
        loaded = self.host.live.loaded_file() if self.host.live is not None else None
        if request.model:
            base: Node = ModelRef(request.model)
        elif live is not None:
            base = live.recipe.root
        elif loaded:
            base = ModelRef(loaded)
        else:
            raise ParameterError("no model is loaded: choose the model to bake the LoRAs into")
        schema = file_schema(self.host.resolve_checkpoint(primary_model(base).path))
        folder = self.host.lora_folder()
        presets = load_lora_presets(self.host.lora_preset_files())
        root = lora_recipe(base, request.loras, lambda name: find_lora(name, folder), schema.id if schema else None,
                           presets)  # fmt: skip
        ui = {"loras": list(request.loras)}
        outcome = self.merge(MergeRequest(root=root, save=request.save, ui=ui, wait=request.wait))
        if live is not None and base is live.recipe.root and outcome.merged:
            outcome.message += f" The LoRAs went on top of the loaded merge {live.name}; Restore gives model A back."
        return outcome

    def merge_loras(self, request: LoraMergeRequest) -> LoraOutcome:
        """LoRAs of the LoRA folder into one new LoRA there (the loaded checkpoint gives the layout)."""
        folder = self.host.lora_folder()
        patched = patchable(self.host)
        model = patched.loaded_file() if patched is not None else None
        loaded = model if model and os.path.isfile(model) else None
        presets = load_lora_presets(self.host.lora_preset_files())
        settings = merge_settings(request, lambda name: find_lora(name, folder), loaded, presets)
        fallback = "-".join(os.path.splitext(os.path.basename(i.path))[0] for i in settings.inputs)
        name = lora_output_name(request.name, f"{fallback}-{request.method}")
        sources = [i.path for i in settings.inputs] + ([settings.model] if settings.model else [])
        job = LoraJob(f"merging LoRAs into {name}", name, request.dtype, request.overwrite, sources)
        return self._lora_job(job, lambda step: merge_loras(settings, step, self._stopping))

    def extract_lora(self, request: LoraExtractRequest) -> LoraOutcome:
        """A LoRA of A − B written to the LoRA folder."""
        settings = extract_settings(request, self.host.resolve_checkpoint, self.host.config().device)
        stems = [os.path.splitext(os.path.basename(p))[0] for p in (settings.a, settings.b)]
        name = lora_output_name(request.name, f"{stems[0]}-minus-{stems[1]}-r{request.rank}")
        job = LoraJob(f"extracting {name}", name, request.dtype, request.overwrite, [settings.a, settings.b])
        return self._lora_job(job, lambda step: extract_lora(settings, step, self._stopping))

    def _lora_job(self, job: LoraJob, make) -> LoraOutcome:
        parse_lora_dtype(job.dtype)  # a wrong dtype is refused before any tensor is read
        target = os.path.join(self.host.lora_folder(), job.name)
        if os.path.exists(target) and not job.overwrite:
            raise OutputExistsError(f"{job.name} exists in the LoRA folder; choose another name")
        check_new_output(target, job.sources, job.overwrite, writes="safetensors")
        started = time.perf_counter()

        def work(step) -> LoraOutcome:
            build = make(step)
            written = write_new_lora(build, target, job.dtype, job.overwrite)
            return LoraOutcome(written.path, written_text(written, build.notes, time.perf_counter() - started))

        return self.file_job(job.stage, work)
