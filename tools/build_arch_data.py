"""Rebuild lib_merge/arch/data/*.json from the architecture key lists in ../shared/archs.

Run from the project root: python tools/build_arch_data.py [SHARED_ARCHS_DIR]
The output is compact JSON (key -> [shape, dtype]) in the source file's key order.
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
    src = Path(sys.argv[1] if len(sys.argv) > 1 else "../shared/archs")
    out = Path(__file__).resolve().parents[1] / "lib_merge" / "arch" / "data"
    out.mkdir(parents=True, exist_ok=True)
    for arch_id, name in SOURCES.items():
        data = json.loads((src / name).read_text())
        text = json.dumps(data, separators=(",", ":"))
        (out / f"{arch_id}.json").write_text(text.replace('],"', '],\n"') + "\n")
        print(f"{arch_id}: {len(data)} keys")


if __name__ == "__main__":
    main()
