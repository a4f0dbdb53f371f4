"""The built-in LoRA extension's per-module state, as v1.10 keeps it (docs/WEBUI.md §5)."""

import torch

DELTA = 0.125


def _layers(model):
    return [m for m in model.modules() if isinstance(getattr(m, "weight", None), torch.nn.Parameter)]


def network_restore_weights_from_backup(module):
    if module.network_weights_backup is not None:
        module.weight.copy_(module.network_weights_backup)  # raises outside torch.no_grad()


def network_reset_cached_weight(module):
    module.network_current_names = ()
    module.network_weights_backup = None
    module.network_bias_backup = None


def activate(model, wanted):
    """What each layer's forward does lazily during sampling: back up, restore, add the deltas."""
    wanted = tuple(wanted)
    with torch.no_grad():
        for m in _layers(model):
            current = getattr(m, "network_current_names", ())
            if wanted and getattr(m, "network_weights_backup", None) is None:
                m.network_weights_backup = m.weight.detach().to("cpu", copy=True)
                m.network_bias_backup = None
            if current != wanted:
                if getattr(m, "network_weights_backup", None) is not None:
                    m.weight.copy_(m.network_weights_backup)
                for _ in wanted:
                    m.weight.add_(DELTA)
                m.network_current_names = wanted
