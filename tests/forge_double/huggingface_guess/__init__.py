"""The two model classes of lllyasviel/huggingface_guess that the double loads (SD1.5 and SDXL), with the
key conversion they do when Forge splits a checkpoint (renames; SDXL's OpenCLIP-G: fused q/k/v split in
three, text projection transposed)."""


def _move_prefix(sd, old, new):
    """Keys under `old` renamed under `new`; every other key dropped (Forge's filter_keys=True)."""
    return {new + k[len(old) :]: v for k, v in sd.items() if k.startswith(old)}


class SD15:
    unet_key_prefix = ["model.diffusion_model."]
    vae_key_prefix = ["first_stage_model."]
    unet_target, vae_target = "unet", "vae"
    clip_target = {"clip_l": "text_encoder"}  # a dict once Forge has loaded the model

    def process_vae_state_dict(self, sd):
        return sd

    def process_clip_state_dict(self, sd):
        for key in list(sd):
            if key.startswith("cond_stage_model.transformer.") and ".text_model." not in key:
                sd[key.replace("transformer.", "transformer.text_model.", 1)] = sd.pop(key)
        return _move_prefix(sd, "cond_stage_model.", "clip_l.")


RESBLOCK_RENAMES = {
    "ln_1": "layer_norm1",
    "ln_2": "layer_norm2",
    "mlp.c_fc": "mlp.fc1",
    "mlp.c_proj": "mlp.fc2",
    "attn.out_proj": "self_attn.out_proj",
}


class SDXL(SD15):
    clip_target = {"clip_l": "text_encoder", "clip_g": "text_encoder_2"}

    def process_clip_state_dict(self, sd):
        out = _move_prefix(sd, "conditioner.embedders.0.transformer.text_model", "clip_l.transformer.text_model")
        out.update(_move_prefix(sd, "conditioner.embedders.1.model.", "clip_g."))
        g, to = "clip_g.", "clip_g.transformer.text_model."
        for old, new in {
            "positional_embedding": "embeddings.position_embedding.weight",
            "token_embedding.weight": "embeddings.token_embedding.weight",
            "ln_final.weight": "final_layer_norm.weight",
            "ln_final.bias": "final_layer_norm.bias",
        }.items():
            if g + old in out:
                out[to + new] = out.pop(g + old)
        layer = 0
        while f"{g}transformer.resblocks.{layer}.ln_1.weight" in out:
            src, dst = f"{g}transformer.resblocks.{layer}.", f"{to}encoder.layers.{layer}."
            for old, new in RESBLOCK_RENAMES.items():
                for kind in ("weight", "bias"):
                    out[f"{dst}{new}.{kind}"] = out.pop(f"{src}{old}.{kind}")
            for kind in ("weight", "bias"):
                fused = out.pop(f"{src}attn.in_proj_{kind}")
                third = fused.shape[0] // 3
                for i, name in enumerate(("q_proj", "k_proj", "v_proj")):
                    out[f"{dst}self_attn.{name}.{kind}"] = fused[third * i : third * (i + 1)]
            layer += 1
        if g + "text_projection" in out:
            projection = out.pop(g + "text_projection")
            out["clip_g.transformer.text_projection.weight"] = projection.transpose(0, 1).contiguous()
        return out


def guess(sd):
    return SDXL() if any(k.startswith("conditioner.embedders.1.") for k in sd) else SD15()
