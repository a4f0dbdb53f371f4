"""Rebuild lib_merge/arch/data/*.json from key lists dumped from real checkpoints.

Run from the project root: python tools/build_arch_data.py DUMPS_DIR
DUMPS_DIR holds one JSON file per architecture (the names in SOURCES) mapping each key to its
shape and dtype. The output is compact JSON (key -> [shape, dtype]) in the source file's key order.
"""

import json
import sys
from pathlib import Path

SOURCES = {
    "sd1": "sd1_ldm.json",
    "sd2": "sd2_ldm_v.json",
    "sdxl": "sdxl_sgm.json",
    "sd3": "sd3_comfyui.json",
    "flux": "flux_flux.json",
}


def main() -> None:
    if len(sys.argv) != 2:
        sys.exit("usage: python tools/build_arch_data.py DUMPS_DIR")
    src = Path(sys.argv[1])
    out = Path(__file__).resolve().parents[1] / "lib_merge" / "arch" / "data"
    out.mkdir(parents=True, exist_ok=True)
    for arch_id, name in SOURCES.items():
        data = json.loads((src / name).read_text())
        text = json.dumps(data, separators=(",", ":"))
        (out / f"{arch_id}.json").write_text(text.replace('],"', '],\n"') + "\n")
        print(f"{arch_id}: {len(data)} keys")


if __name__ == "__main__":
    main()
