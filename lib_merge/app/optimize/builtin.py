"""The built-in scorers: "aesthetic", the LAION improved aesthetic predictor (an MLP over CLIP ViT-L/14
image embeddings), and "clip", prompt fidelity as the CLIP similarity of image and prompt.

Their weights are files in `<user-data>/scorer-models/`: the CLIP model as a Hugging Face folder (safetensors
only) and the predictor's state dict (safetensors, or its published .pth read with torch's weights-only
loader, which runs no code). They are fetched once from their public source only when the user allows it.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import torch

from lib_merge.app.optimize.plugins import ScoreFunction
from lib_merge.app.optimize.scorers import BuiltinScorer
from lib_merge.errors import ParameterError
from lib_merge.paths import user_data_dir

CLIP_FOLDER = "clip-vit-large-patch14"
AESTHETIC_FILES = ("sac+logos+ava1-l14-linearMSE.safetensors", "sac+logos+ava1-l14-linearMSE.pth")
CLIP_FILES = ("config.json", "model.safetensors", "preprocessor_config.json", "vocab.json", "merges.txt")


@dataclass(frozen=True)
class ScorerSettings:
    """Where the scorers' weights are, whether they may be fetched, and where they run."""

    folder: Path
    allow_fetch: bool = False
    device: str = "cpu"

    @classmethod
    def default(cls) -> ScorerSettings:
        return cls(user_data_dir() / "scorer-models")

    def clip_folder(self) -> Path:
        return self.folder / CLIP_FOLDER

    def aesthetic_file(self) -> Path | None:
        return next((self.folder / n for n in AESTHETIC_FILES if (self.folder / n).is_file()), None)


def _missing(settings: ScorerSettings, needs_mlp: bool) -> list[str]:
    missing = [f"{CLIP_FOLDER}/{n}" for n in CLIP_FILES if not (settings.clip_folder() / n).is_file()]
    if needs_mlp and settings.aesthetic_file() is None:
        missing.append(AESTHETIC_FILES[1])
    return missing


def check_weights(settings: ScorerSettings, needs_mlp: bool) -> None:
    """Before a study: the weights are there, or may be fetched (docs/OPTIMIZE.md names their sources)."""
    missing = _missing(settings, needs_mlp)
    if missing and not settings.allow_fetch:
        raise ParameterError(
            f"the scorer's weights are not in {settings.folder}: {', '.join(missing)}; put them there, or allow "
            "Alloy to fetch them once in Settings (Alloy: fetch scorer models)"
        )


class ClipEmbedder:
    """CLIP's image and text embeddings, L2-normalised, from a local Hugging Face folder."""

    def __init__(self, folder: Path, device: str = "cpu"):
        from transformers import CLIPImageProcessor, CLIPModel, CLIPTokenizer

        self.device = device
        self.model = CLIPModel.from_pretrained(str(folder), local_files_only=True, use_safetensors=True)
        self.model.to(device).eval()
        self.images = CLIPImageProcessor.from_pretrained(str(folder), local_files_only=True)
        self.tokens = CLIPTokenizer.from_pretrained(str(folder), local_files_only=True)

    @torch.no_grad()
    def image_embeddings(self, images: list) -> torch.Tensor:
        pixels = self.images(images=[im.convert("RGB") for im in images], return_tensors="pt")["pixel_values"]
        features = self.model.get_image_features(pixel_values=pixels.to(self.device))
        return torch.nn.functional.normalize(features.float(), dim=-1)

    @torch.no_grad()
    def text_embeddings(self, prompts: list[str]) -> torch.Tensor:
        length = self.model.config.text_config.max_position_embeddings
        tokens = self.tokens(prompts, padding="max_length", truncation=True, max_length=length, return_tensors="pt")
        features = self.model.get_text_features(
            input_ids=tokens["input_ids"].to(self.device), attention_mask=tokens["attention_mask"].to(self.device)
        )
        return torch.nn.functional.normalize(features.float(), dim=-1)


def aesthetic_mlp(path: Path) -> torch.nn.Sequential:
    """The predictor as LAION publishes it: Linear layers at `layers.0/2/4/6/7` (dropouts between them do
    nothing when scoring), its sizes read from the weights."""
    if path.suffix == ".safetensors":
        from safetensors.torch import load_file

        state = load_file(str(path))
    else:
        try:
            state = torch.load(str(path), map_location="cpu", weights_only=True)  # tensors only: no code runs
        except Exception as e:  # noqa: BLE001 - a damaged or hostile file: one line, nothing run
            raise ParameterError(f"{path}: not a plain state dict of tensors ({type(e).__name__})") from None
    try:
        indices = sorted({int(k.split(".")[1]) for k in state if k.startswith("layers.")})
        linears = [(state[f"layers.{i}.weight"], state[f"layers.{i}.bias"]) for i in indices]
    except (KeyError, ValueError, IndexError) as e:
        raise ParameterError(f"{path}: not the aesthetic predictor's weights ({e})") from None
    layers = []
    for weight, bias in linears:
        linear = torch.nn.Linear(weight.shape[1], weight.shape[0])
        linear.load_state_dict({"weight": weight.float(), "bias": bias.float()})
        layers.append(linear)
    return torch.nn.Sequential(*layers).eval()


def _aesthetic(settings: ScorerSettings) -> ScoreFunction:
    check_weights(settings, needs_mlp=True)
    fetch_missing(settings, needs_mlp=True)
    clip, mlp = ClipEmbedder(settings.clip_folder(), settings.device), aesthetic_mlp(settings.aesthetic_file())

    def score(images: list, prompts: list[str]) -> list[float]:
        with torch.no_grad():
            return mlp(clip.image_embeddings(images)).squeeze(-1).tolist()

    return score


def _clip(settings: ScorerSettings) -> ScoreFunction:
    check_weights(settings, needs_mlp=False)
    fetch_missing(settings, needs_mlp=False)
    clip = ClipEmbedder(settings.clip_folder(), settings.device)

    def score(images: list, prompts: list[str]) -> list[float]:
        similarity = (clip.image_embeddings(images) * clip.text_embeddings(list(prompts))).sum(dim=-1)
        return (100 * similarity).tolist()

    return score


def fetch_missing(settings: ScorerSettings, needs_mlp: bool) -> None:
    """The missing weights fetched from their public source (allowed in Settings), each file published
    whole under its name or not at all."""
    from lib_merge.app.optimize.fetch import SOURCES, fetch_file

    for missing in _missing(settings, needs_mlp):
        fetch_file(SOURCES[os.path.basename(missing)], settings.folder / missing)


BUILTIN_SCORERS = {
    "aesthetic": BuiltinScorer(
        "aesthetic",
        "LAION improved aesthetic predictor over CLIP ViT-L/14",
        _aesthetic,
        lambda s: check_weights(s, needs_mlp=True),
    ),  # fmt: skip
    "clip": BuiltinScorer(
        "clip",
        "prompt fidelity: CLIP ViT-L/14 image-text similarity × 100",
        _clip,
        lambda s: check_weights(s, needs_mlp=False),
    ),  # fmt: skip
}
