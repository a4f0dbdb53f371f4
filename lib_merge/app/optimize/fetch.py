"""Fetching a scorer's public weights once, when the user allows it: each file is written to a temporary
file beside its target and takes its name only when whole, so a cut download leaves nothing half-made."""

from __future__ import annotations

import os
import shutil
import urllib.request
from pathlib import Path

from lib_merge.errors import ParameterError

_CLIP = "https://huggingface.co/openai/clip-vit-large-patch14/resolve/main/"
SOURCES = {
    **{
        name: _CLIP + name
        for name in ("config.json", "model.safetensors", "preprocessor_config.json", "vocab.json", "merges.txt")
    },  # fmt: skip
    "sac+logos+ava1-l14-linearMSE.pth": "https://github.com/christophschuhmann/improved-aesthetic-predictor/raw/main/"
    "sac+logos+ava1-l14-linearMSE.pth",
}


def fetch_file(url: str, target: Path, timeout: float = 60.0) -> Path:
    """`url` saved as `target` (its folder made); an existing target is kept as it is."""
    target = Path(target)
    if target.is_file():
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    partial = target.with_name(f".{target.name}.alloy-tmp-{os.getpid()}")
    try:
        with urllib.request.urlopen(url, timeout=timeout) as answer, open(partial, "wb") as out:  # noqa: S310
            shutil.copyfileobj(answer, out, length=1 << 20)
            out.flush()
            os.fsync(out.fileno())
        os.link(partial, target)  # never replaces a file that appeared meanwhile
    except FileExistsError:
        pass
    except OSError as e:
        raise ParameterError(f"could not fetch {url} into {target}: {e}") from None
    finally:
        partial.unlink(missing_ok=True)
    return target
