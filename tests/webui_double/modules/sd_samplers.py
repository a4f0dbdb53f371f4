"""v1.10.1's sampler table, as far as Alloy reads it: the names txt2img takes."""

all_samplers_map = {name: None for name in ("DPM++ 2M", "Euler a", "Euler", "DDIM")}
