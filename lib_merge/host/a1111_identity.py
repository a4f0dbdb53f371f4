"""The live merge's identity in AUTOMATIC1111 (and Forge): a checkpoint entry of its own, and the merge held
through a txt2img run that loads another checkpoint for itself (docs/WEBUI.md §2, §3, §9).

WebUI modules are imported at call time, as in a1111.py.
"""

from __future__ import annotations

import functools
import os

from lib_merge.app.ports import MergeIdentity

VIRTUAL_SUFFIX = ".alloy-merge"


class MergeEntry:
    """The synthetic CheckpointInfo of the live merge, in the WebUI's tables and options."""

    def _init_entry(self) -> None:
        self._entry = None  # the synthetic CheckpointInfo of the live merge
        self._base_entry = None  # model A's CheckpointInfo
        self._held = None  # the live merge a txt2img run's checkpoint override displaced, until merged again
        self._displacing = False  # the next model load is that run's override: the merge's entry stays

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

    # -- checkpoint overrides of txt2img runs -------------------------------------------
    def hold_for_run(self, p, workbench) -> None:
        """At the start of every txt2img run: hold the live merge when the run loads another checkpoint for
        itself (`override_settings`, sent by many API clients with every request): the WebUI then loads that
        checkpoint and afterwards only writes the merge's name back into its options (docs/WEBUI.md §9), so
        `after_process` merges it again. A merge an earlier run displaced and never got back (the run
        failed) comes back now if the options name it."""
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


def keep_listed(host: MergeEntry) -> None:
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
