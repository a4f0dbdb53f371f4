"""Each LoRA module type's ΔW against the formula written out here (docs/FORMULAS.md §10)."""

from __future__ import annotations

import pytest
import torch

from lib_merge.errors import LoraFormatError
from lib_merge.lora.formats import group_modules, module_bias_delta, module_delta

G = torch.Generator().manual_seed(0)


def r(*shape) -> torch.Tensor:
    return torch.randn(*shape, generator=G, dtype=torch.float64).float()


def delta(parts: dict, weight: torch.Tensor) -> torch.Tensor:
    (module,) = group_modules({f"lora_unet_x.{k}": v for k, v in parts.items()}).values()
    return module_delta(module, weight)


def close(a: torch.Tensor, b: torch.Tensor) -> None:
    torch.testing.assert_close(a.double(), b.double(), rtol=1e-4, atol=1e-5)


def test_lora_linear_with_alpha():
    up, down, w = r(8, 4), r(4, 6), r(8, 6)
    close(delta({"lora_up.weight": up, "lora_down.weight": down, "alpha": torch.tensor(2.0)}, w), 0.5 * up @ down)
    close(delta({"lora_up.weight": up, "lora_down.weight": down}, w), up @ down)  # no alpha: scale 1


def test_locon_1x1_and_3x3_convs():
    up, down, w = r(8, 4, 1, 1), r(4, 6, 1, 1), r(8, 6, 1, 1)
    close(
        delta({"lora_up.weight": up, "lora_down.weight": down}, w), (up[:, :, 0, 0] @ down[:, :, 0, 0])[..., None, None]
    )
    up, down, w = r(8, 4, 1, 1), r(4, 6, 3, 3), r(8, 6, 3, 3)
    expected = (up.reshape(8, 4) @ down.reshape(4, -1)).reshape(8, 6, 3, 3)
    close(delta({"lora_up.weight": up, "lora_down.weight": down, "alpha": torch.tensor(8.0)}, w), 2 * expected)


def test_tucker_mid():
    up, down, mid, w = r(8, 4, 1, 1), r(4, 6, 1, 1), r(4, 4, 3, 3), r(8, 6, 3, 3)
    expected = torch.zeros(8, 6, 3, 3, dtype=torch.float64)
    for p in range(8):
        for q in range(6):
            for i in range(4):
                for j in range(4):
                    expected[p, q] += up[p, i, 0, 0].double() * mid[i, j].double() * down[j, q, 0, 0].double()
    close(delta({"lora_up.weight": up, "lora_down.weight": down, "lora_mid.weight": mid}, w), expected)


def test_peft_names_are_lora():
    up, down, w = r(8, 4), r(4, 6), r(8, 6)
    (module,) = group_modules({"unet.a.to_q.lora_A.weight": down, "unet.a.to_q.lora_B.weight": up}).values()
    assert module.name == "unet.a.to_q" and module.kind == "lora" and module.rank == 4
    close(module_delta(module, w), up @ down)


def test_loha():
    w1a, w1b, w2a, w2b, w = r(8, 2), r(2, 6), r(8, 2), r(2, 6), r(8, 6)
    parts = {"hada_w1_a": w1a, "hada_w1_b": w1b, "hada_w2_a": w2a, "hada_w2_b": w2b, "alpha": torch.tensor(1.0)}
    close(delta(parts, w), 0.5 * (w1a @ w1b) * (w2a @ w2b))


def test_lokr_full_and_decomposed_factors():
    w1, w2, w = r(2, 3), r(4, 2), r(8, 6)
    close(delta({"lokr_w1": w1, "lokr_w2": w2, "alpha": torch.tensor(7.0)}, w), torch.kron(w1, w2))  # s = 1
    w2a, w2b = r(4, 1), r(1, 2)
    parts = {"lokr_w1": w1, "lokr_w2_a": w2a, "lokr_w2_b": w2b, "alpha": torch.tensor(0.5)}
    close(delta(parts, w), 0.5 * torch.kron(w1, w2a @ w2b))  # rank 1: s = alpha / 1


def test_ia3_rows_and_columns():
    w, vec_out, vec_in = r(8, 6), r(8), r(6)
    close(delta({"weight": vec_out}, w), w * vec_out[:, None])
    close(delta({"weight": vec_in, "on_input": torch.tensor(True)}, w), w * vec_in[None, :])


def test_full_and_norm_with_their_biases():
    diff, diff_b, w = r(8, 6), r(8), r(8, 6)
    (module,) = group_modules({"m.diff": diff, "m.diff_b": diff_b}).values()
    close(module_delta(module, w), diff)
    close(module_bias_delta(module), diff_b)
    w_norm, b_norm = r(8), r(8)
    (module,) = group_modules({"m.w_norm": w_norm, "m.b_norm": b_norm}).values()
    assert module.kind == "norm"
    close(module_delta(module, r(8)), w_norm)
    close(module_bias_delta(module), b_norm)


@pytest.mark.parametrize("axis", ["lycoris", "peft"])
def test_dora(axis):
    up, down, w = r(8, 4), r(4, 6), r(8, 6)
    d = up @ down
    merged = w + d
    if axis == "lycoris":  # [1, in]: norms over the outputs, per input column
        scale_vec = r(1, 6).abs()
        norm = merged.norm(dim=0, keepdim=True)
    else:  # [out, 1]: per output row
        scale_vec = r(8, 1).abs()
        norm = merged.norm(dim=1, keepdim=True)
    expected = 0.5 * (merged * (scale_vec / norm) - w)
    parts = {"lora_up.weight": up, "lora_down.weight": down, "alpha": torch.tensor(2.0), "dora_scale": scale_vec}
    close(delta(parts, w), expected)


def test_unknown_parts_are_an_error_naming_them():
    with pytest.raises(LoraFormatError, match="keys are no LoRA part: m.something_else"):
        group_modules({"m.something_else": r(2)})
