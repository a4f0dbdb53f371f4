"""Derive the key data of Chroma, SD3.5 medium and SD3.5 large from Flux's and SD3 medium's.

Run from the project root: python tools/derive_arch_data.py
The facts (public model configurations): Chroma is Flux with its modulation layers, time, vector and guidance
embedders and CLIP-L removed, and a distilled guidance layer added (in 64 -> 5120, five MLP layers of 5120 with
RMS norms, out 5120 -> 3072). SD3.5 adds RMS q/k norms (64 wide) to every attention; SD3.5 large has 38 joint
blocks of width 2432, SD3.5 medium 24 of width 1536 with a second attention in blocks 0-12 (9 modulation
chunks there instead of 6) and a position table for 384 x 384 patches; the last block's context side is
"pre only" (2 modulation chunks, no projection, no MLP). The generator is checked against SD3 medium's real
keys before anything is written.
"""

import json
import re
from pathlib import Path

DATA = Path(__file__).resolve().parents[1] / "lib_merge" / "arch" / "data"
U = "model.diffusion_model."
_CHROMA_DROPS = re.compile(
    r"model\.diffusion_model\.(double_blocks\.\d+\.(img|txt)_mod\.|single_blocks\.\d+\.modulation\.|time_in\.|"
    r"vector_in\.|guidance_in\.|final_layer\.adaLN_modulation\.)"
)


def chroma(flux: dict) -> dict:
    out = {k: v for k, v in flux.items() if not _CHROMA_DROPS.match(k) and not k.startswith("text_encoders.clip_l.")}
    width, dtype, g = 5120, "bfloat16", U + "distilled_guidance_layer."
    out[g + "in_proj.weight"], out[g + "in_proj.bias"] = [[width, 64], dtype], [[width], dtype]
    for i in range(5):
        for layer in ("in_layer", "out_layer"):
            out[f"{g}layers.{i}.{layer}.weight"] = [[width, width], dtype]
            out[f"{g}layers.{i}.{layer}.bias"] = [[width], dtype]
        out[f"{g}norms.{i}.scale"] = [[width], dtype]
    out[g + "out_proj.weight"], out[g + "out_proj.bias"] = [[3072, width], dtype], [[3072], dtype]
    return dict(sorted(out.items()))


def mmdit(depth: int, hidden: int, positions: int, dual=(), dtype="float16", qk_norm=True) -> dict:
    out = {}

    def linear(name, rows, cols):
        out[U + name + ".weight"], out[U + name + ".bias"] = [[rows, cols], dtype], [[rows], dtype]

    def norms(prefix):
        if qk_norm:
            out[U + prefix + "ln_q.weight"], out[U + prefix + "ln_k.weight"] = [[64], dtype], [[64], dtype]

    for n in range(depth):
        for side in ("x_block", "context_block"):
            p = f"joint_blocks.{n}.{side}."
            pre_only = side == "context_block" and n == depth - 1
            chunks = 2 if pre_only else 9 if side == "x_block" and n in dual else 6
            linear(p + "adaLN_modulation.1", chunks * hidden, hidden)
            linear(p + "attn.qkv", 3 * hidden, hidden)
            norms(p + "attn.")
            if not pre_only:
                linear(p + "attn.proj", hidden, hidden)
                linear(p + "mlp.fc1", 4 * hidden, hidden)
                linear(p + "mlp.fc2", hidden, 4 * hidden)
            if side == "x_block" and n in dual:
                linear(p + "attn2.qkv", 3 * hidden, hidden)
                linear(p + "attn2.proj", hidden, hidden)
                norms(p + "attn2.")
    linear("context_embedder", hidden, 4096)
    linear("final_layer.adaLN_modulation.1", 2 * hidden, hidden)
    linear("final_layer.linear", 64, hidden)
    out[U + "pos_embed"] = [[1, positions, hidden], dtype]
    linear("t_embedder.mlp.0", hidden, 256)
    linear("t_embedder.mlp.2", hidden, hidden)
    out[U + "x_embedder.proj.weight"], out[U + "x_embedder.proj.bias"] = [[hidden, 16, 2, 2], dtype], [[hidden], dtype]
    linear("y_embedder.mlp.0", hidden, 2048)
    linear("y_embedder.mlp.2", hidden, hidden)
    return out


def write(name: str, data: dict) -> None:
    lines = [json.dumps(key) + ":" + json.dumps(value, separators=(",", ":")) for key, value in data.items()]
    (DATA / name).write_text("{" + ",\n".join(lines) + "}\n")  # one key per line
    print(f"{name}: {len(data)} keys")


def main() -> None:
    flux = json.loads((DATA / "flux.json").read_text())
    sd3 = json.loads((DATA / "sd3.json").read_text())
    real = {k: v for k, v in sd3.items() if k.startswith(U)}
    if mmdit(24, 1536, 192 * 192, dtype="float32", qk_norm=False) != real:
        raise SystemExit("the generator no longer gives SD3 medium's keys")
    encoders = {k: [shape, "float16" if dtype == "float32" else dtype] for k, (shape, dtype) in sd3.items()
                if not k.startswith(U)}  # fmt: skip
    write("chroma.json", chroma(flux))
    write("sd35_large.json", dict(sorted({**mmdit(38, 2432, 192 * 192), **encoders}.items())))
    write("sd35_medium.json", dict(sorted({**mmdit(24, 1536, 384 * 384, dual=range(13)), **encoders}.items())))


if __name__ == "__main__":
    main()
