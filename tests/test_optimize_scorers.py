"""The built-in scorers on small random-weight stand-ins of their real architectures (a CLIP with the
ViT/text towers of ViT-L/14 at toy sizes, LAION's predictor MLP), against reference computations here."""

from __future__ import annotations

import json
import pickle
import threading
from functools import partial
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from lib_merge.app.optimize.builtin import BUILTIN_SCORERS, CLIP_FOLDER, ScorerSettings, check_weights
from lib_merge.app.optimize.fetch import fetch_file
from lib_merge.errors import AlloyError

MEAN = np.array([0.48145466, 0.4578275, 0.40821073])
STD = np.array([0.26862954, 0.26130258, 0.27577711])


def _tokenizer_files(folder: Path) -> None:
    """A character-level CLIP BPE vocabulary (no merges): every byte, alone and word-final."""
    from transformers.models.clip.tokenization_clip import bytes_to_unicode

    chars = list(bytes_to_unicode().values())
    vocab = {c: i for i, c in enumerate(chars)}
    vocab.update({c + "</w>": len(chars) + i for i, c in enumerate(chars)})
    vocab.update({"<|startoftext|>": len(vocab), "<|endoftext|>": len(vocab) + 1})
    (folder / "vocab.json").write_text(json.dumps(vocab))
    (folder / "merges.txt").write_text("#version: 0.2\n")


@pytest.fixture(scope="module")
def scorer_models(tmp_path_factory) -> Path:
    from transformers import CLIPConfig, CLIPImageProcessor, CLIPModel

    root = tmp_path_factory.mktemp("scorer-models")
    clip = root / CLIP_FOLDER
    clip.mkdir()
    torch.manual_seed(0)
    config = CLIPConfig(
        text_config={"vocab_size": 514, "hidden_size": 32, "intermediate_size": 64, "num_hidden_layers": 2,
                     "num_attention_heads": 4, "max_position_embeddings": 77},
        vision_config={"hidden_size": 32, "intermediate_size": 64, "num_hidden_layers": 2,
                       "num_attention_heads": 4, "image_size": 32, "patch_size": 8},
        projection_dim=16,
    )  # fmt: skip
    CLIPModel(config).save_pretrained(clip, safe_serialization=True)
    CLIPImageProcessor(size={"shortest_edge": 32}, crop_size={"height": 32, "width": 32}).save_pretrained(clip)
    _tokenizer_files(clip)
    sizes = [16, 32, 8, 4, 2, 1]  # LAION's 768 → 1024 → 128 → 64 → 16 → 1, scaled down
    state = {}
    for index, (n_in, n_out) in zip((0, 2, 4, 6, 7), zip(sizes, sizes[1:], strict=False), strict=True):
        state[f"layers.{index}.weight"] = torch.randn(n_out, n_in) * 0.5
        state[f"layers.{index}.bias"] = torch.randn(n_out) * 0.1
    torch.save(state, root / "sac+logos+ava1-l14-linearMSE.pth")
    return root


def _images() -> list[Image.Image]:
    rng = np.random.default_rng(5)
    smooth = Image.fromarray(np.tile(np.linspace(0, 255, 48, dtype=np.uint8), (40, 1))[..., None].repeat(3, 2))
    return [smooth, Image.fromarray(rng.integers(0, 256, (40, 48, 3), dtype=np.uint8))]


def _reference_image_features(folder: Path, images) -> torch.Tensor:
    """CLIP's preprocessing by hand (shortest edge to 32 bicubic, centre crop, CLIP's mean and std), then
    the vision tower and projection, L2-normalised."""
    from transformers import CLIPModel

    model = CLIPModel.from_pretrained(str(folder)).eval()
    batch = []
    for image in images:
        w, h = image.size
        scale = 32 / min(w, h)
        resized = image.resize((round(w * scale), round(h * scale)), Image.BICUBIC)
        left, top = (resized.width - 32) // 2, (resized.height - 32) // 2
        pixels = np.asarray(resized.crop((left, top, left + 32, top + 32)), dtype=np.float64) / 255
        batch.append(((pixels - MEAN) / STD).transpose(2, 0, 1))
    with torch.no_grad():
        features = model.get_image_features(pixel_values=torch.tensor(np.stack(batch), dtype=torch.float32))
    return torch.nn.functional.normalize(features, dim=-1)


def test_the_aesthetic_scorer_is_laions_mlp_over_clip_image_embeddings(scorer_models):
    images = _images()
    score = BUILTIN_SCORERS["aesthetic"].load(ScorerSettings(scorer_models))
    got = score(images, ["a", "b"])
    state = torch.load(scorer_models / "sac+logos+ava1-l14-linearMSE.pth", weights_only=True)
    x = _reference_image_features(scorer_models / CLIP_FOLDER, images).double()
    for index in (0, 2, 4, 6, 7):  # linear layers one after another; the dropouts between do nothing here
        x = x @ state[f"layers.{index}.weight"].double().T + state[f"layers.{index}.bias"].double()
    assert got == pytest.approx(x.squeeze(-1).tolist(), abs=2e-3)


def test_the_clip_scorer_is_image_text_similarity(scorer_models):
    from transformers import CLIPModel, CLIPTokenizer

    images, prompts = _images(), ["a smooth ramp", "noise"]
    got = BUILTIN_SCORERS["clip"].load(ScorerSettings(scorer_models))(images, prompts)
    folder = scorer_models / CLIP_FOLDER
    model, tokens = CLIPModel.from_pretrained(str(folder)).eval(), CLIPTokenizer.from_pretrained(str(folder))
    ids = tokens(prompts, padding="max_length", max_length=77, return_tensors="pt")
    with torch.no_grad():
        text = torch.nn.functional.normalize(model.get_text_features(**ids), dim=-1)
    image = _reference_image_features(folder, images)
    assert got == pytest.approx((100 * (image * text).sum(-1)).tolist(), abs=0.2)


def test_missing_weights_are_named_before_a_study(tmp_path):
    with pytest.raises(AlloyError, match="sac\\+logos\\+ava1-l14-linearMSE.pth") as caught:
        check_weights(ScorerSettings(tmp_path), needs_mlp=True)
    assert "clip-vit-large-patch14/model.safetensors" in str(caught.value) and "Settings" in str(caught.value)
    check_weights(ScorerSettings(tmp_path, allow_fetch=True), needs_mlp=True)  # may fetch: no error


class _Boom:
    def __reduce__(self):
        return (Path.touch, (Path(_Boom.marker),))


def test_a_hostile_predictor_file_runs_no_code(scorer_models, tmp_path):
    import shutil

    hostile = tmp_path / "models"
    shutil.copytree(scorer_models, hostile)
    _Boom.marker = str(tmp_path / "ran")
    torch.save({"layers.0.weight": _Boom()}, hostile / "sac+logos+ava1-l14-linearMSE.pth", pickle_module=pickle)
    with pytest.raises(AlloyError, match="not a plain state dict of tensors"):
        BUILTIN_SCORERS["aesthetic"].load(ScorerSettings(hostile))
    assert not (tmp_path / "ran").exists()


def test_fetching_publishes_whole_files_only(tmp_path):
    served = tmp_path / "served"
    served.mkdir()
    (served / "weights.bin").write_bytes(b"x" * 300_000)
    server = ThreadingHTTPServer(("127.0.0.1", 0), partial(SimpleHTTPRequestHandler, directory=str(served)))
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        url = f"http://127.0.0.1:{server.server_address[1]}"
        target = tmp_path / "got" / "weights.bin"
        assert fetch_file(f"{url}/weights.bin", target).read_bytes() == b"x" * 300_000
        with pytest.raises(AlloyError, match="could not fetch"):
            fetch_file(f"{url}/missing.bin", tmp_path / "got" / "missing.bin")
        assert sorted(p.name for p in (tmp_path / "got").iterdir()) == ["weights.bin"]  # no partial file left
    finally:
        server.shutdown()


def test_the_webui_setting_lets_a_study_fetch_the_weights(webui, tmp_path, monkeypatch):
    """Without the Settings option a study naming "aesthetic" is refused before it runs, naming the files;
    with it, the study may fetch them."""
    from lib_merge.app.optimize.desk import OptimizeDesk
    from lib_merge.app.optimize.request import StudyGen, StudyRequest

    monkeypatch.setenv("ALLOY_HOME", str(tmp_path / "home"))
    desk = OptimizeDesk(webui.workbench)
    recipe = f'alloy-recipe 1\nA = model("{webui.title("model_a")}")\nmerged = weighted_sum(A, A, alpha=param("x"))\n'
    request = StudyRequest("s", recipe, {"x": {"low": 0, "high": 1}}, trials=1, scorer="aesthetic",
                           gen=StudyGen(prompt=["p"]))  # fmt: skip
    with pytest.raises(AlloyError, match="allow Alloy to fetch them once in Settings"):
        desk.plan(request)
    webui.shared.opts.data["alloy_fetch_scorer_models"] = True
    assert desk.settings.allow_fetch is True and desk.settings.folder == tmp_path / "home" / "scorer-models"
    assert desk.plan(request).objectives[0].scorer == "aesthetic"
