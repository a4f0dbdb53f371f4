"""Many models in one pass: the many-model methods read their inputs a slice at a time.

With one slice covering a whole tensor, the methods do the whole-tensor fp32 arithmetic they did
before they streamed; TIES, DARE(-TIES) and the average give those bits in any slicing. Model
stock and geometric median add up their norms and dot products slice by slice in float64 (the
whole-tensor versions summed in fp32): they are held to float64 formulas written here.
"""

from __future__ import annotations

import math
import os
from pathlib import Path

import numpy as np
import pytest
import torch
from helpers import load
from safetensors.torch import save_file
from test_merge import merge
from test_modern import mask

from lib_merge.io.safetensors_reader import SafetensorsFile
from lib_merge.methods import METHODS, modern, operand

STREAMED = ("ties", "dare", "dare_ties", "model_stock", "geometric_median", "n_average")
BASED = ("ties", "dare", "dare_ties", "model_stock")
PARAMS = {
    "ties": {"alpha": 0.8, "density": 0.3, "sign": "count"},
    "dare": {"alpha": 0.7, "p": 0.4, "seed": 5},
    "dare_ties": {"alpha": 0.9, "p": 0.3, "seed": 9, "sign": "sum"},
    "model_stock": {},
    "geometric_median": {"eps": 1e-9, "max_iter": 50},
    "n_average": {},
}
KEY = "model.diffusion_model.input_blocks.1.0.in_layers.2.weight"


def tiny(monkeypatch) -> None:
    """Slices of a few elements, so miniature tensors are read in many of them."""
    monkeypatch.setattr(operand, "STREAM_ELEMENTS", 96)
    monkeypatch.setattr(operand, "MAX_SLICE", 40)
    monkeypatch.setattr(operand, "MIN_SLICE", 5)


@pytest.fixture
def tiny_slices(monkeypatch):
    tiny(monkeypatch)


def inputs(count: int, shape=(37, 29), seed: int = 0) -> list[torch.Tensor]:
    """A base and fine-tunes of it (shared direction plus noise), one of them equal to the base."""
    gen = torch.Generator().manual_seed(seed)
    base = torch.randn(shape, generator=gen)
    common = torch.randn(shape, generator=gen) * 0.05
    models = [base + common + torch.randn(shape, generator=gen) * 0.03 for _ in range(count - 2)]
    return [base, *models, base.clone()]


def call(method: str, tensors: list[torch.Tensor], key: str = KEY) -> torch.Tensor:
    spec = METHODS[method]
    key = {"key": key} if spec.needs_key else {}
    return spec.fn(*[t.clone() for t in tensors], **PARAMS[method], **key)


@pytest.mark.parametrize("method", ["ties", "dare", "dare_ties", "n_average"])
def test_slicing_changes_no_bit(method, monkeypatch):
    tensors = inputs(19)
    whole = call(method, tensors)  # one slice: the whole-tensor arithmetic
    tiny(monkeypatch)
    assert torch.equal(call(method, tensors), whole)


def test_ties_and_dare_are_the_whole_tensor_formulas(tiny_slices):
    base, *models = inputs(12)
    deltas = [m - base for m in models]
    trimmed = []
    for d in deltas:  # the k-th largest |δ| by a full sort, k = ⌈0.3·numel⌉
        limit = torch.sort(d.abs().reshape(-1), descending=True).values[math.ceil(0.3 * d.numel()) - 1]
        trimmed.append(d * (d.abs() >= limit))
    stack = torch.stack(trimmed)
    sigma = torch.sign(torch.sign(stack).sum(0))
    agree = (stack * sigma > 0).float()
    tau = (stack * agree).sum(0) / agree.sum(0).clamp(min=1)
    got = call("ties", [base, *models])
    np.testing.assert_allclose(got.numpy(), (base + 0.8 * tau).numpy(), rtol=1e-6, atol=1e-7)
    # DARE: each model's mask is one draw of the whole shape from its own generator, cut into slices
    keep = np.float32(0.6)  # torch compares fp32 draws with the keep probability as fp32
    kept = [d * (torch.from_numpy(mask(5, i, KEY, d.shape, keep)).float() * (1 / 0.6)) for i, d in enumerate(deltas)]
    total = kept[0]
    for k in kept[1:]:
        total = total + k
    assert torch.equal(call("dare", [base, *models]), torch.add(base, total, alpha=0.7))


def test_average_sums_in_the_models_order(tiny_slices):
    """The plain mean adds the models up in their order and divides once: the bits of torch's stacked mean for
    large tensors (which pairs them otherwise below some 64K elements, as the whole-tensor code did there)."""
    tensors = inputs(17)
    total = tensors[0].clone()
    for t in tensors[1:]:
        total += t
    got = call("n_average", tensors)
    assert torch.equal(got, total / 17)
    np.testing.assert_allclose(got.numpy(), torch.stack(tensors).mean(0).numpy(), rtol=1e-6, atol=1e-6)
    weights = tuple(float(i % 4) for i in range(17))
    expected = sum(w * t.double() for w, t in zip(weights, tensors, strict=True)) / sum(weights)
    got = METHODS["n_average"].fn(*[t.clone() for t in tensors], weights=weights)
    np.testing.assert_allclose(got.double().numpy(), expected.numpy(), rtol=1e-6, atol=1e-6)


@pytest.mark.parametrize("count", [3, 18, 40])
def test_model_stock_and_geometric_median_match_float64_formulas(count, tiny_slices):
    tensors = inputs(count, seed=count)
    a, *ms = [t.double().reshape(-1).numpy() for t in tensors]
    deltas = [m - a for m in ms]
    norms = [np.linalg.norm(d) for d in deltas]
    cosines = [
        deltas[i] @ deltas[j] / (norms[i] * norms[j])
        for i in range(len(ms))
        for j in range(i + 1, len(ms))
        if norms[i] > 0 and norms[j] > 0  # the model equal to the base has no direction
    ]
    c = np.mean(cosines) if cosines else 0.0  # three inputs: one fine-tune, one equal to the base
    t = len(ms) * c / (1 + (len(ms) - 1) * c)
    stock = t * np.mean(ms, axis=0) + (1 - t) * a
    got = call("model_stock", tensors).double().reshape(-1).numpy()
    np.testing.assert_allclose(got, stock, rtol=1e-5, atol=1e-6)

    points = [a, *ms]
    x = np.mean(points, axis=0)
    for _ in range(50):
        w = np.array([1 / max(np.linalg.norm(p - x), 1e-8) for p in points])
        new = sum(wi * p for wi, p in zip(w, points, strict=True)) / w.sum()
        done = np.linalg.norm(new - x) <= 1e-9 * max(np.linalg.norm(x), 1)
        x = new
        if done:
            break
    got = call("geometric_median", tensors).double().reshape(-1).numpy()
    np.testing.assert_allclose(got, x, rtol=1e-5, atol=1e-6)


def test_model_stock_of_orthogonal_and_equal_deltas():
    zero = torch.zeros(2)
    assert modern.model_stock(zero, torch.tensor([1.0, 0]), torch.tensor([0.0, 1])).tolist() == [0, 0]
    assert modern.model_stock(zero, torch.tensor([1.0, 2]), torch.tensor([1.0, 2])).tolist() == pytest.approx([1, 2])
    # deltas of zero length take no part: with one left there is no pair, c = 0 and t = 0
    assert modern.model_stock(zero, zero.clone(), torch.tensor([3.0, 4])).tolist() == [0, 0]


@pytest.fixture(scope="module")
def twenty(models):
    """Twenty miniature SD1 checkpoints: more than the 16 models besides A that other methods take."""
    return [models(f"many_{i}", arch="sd1", seed=100 + i, components=("unet",)) for i in range(20)]


def recipe(method: str, paths: list[Path], **params) -> str:
    names = [f"M{i}" for i in range(len(paths))]
    lines = ["alloy-recipe 1"] + [f'{n} = model("{p}")' for n, p in zip(names, paths, strict=True)]
    args = [f"{k}={v!r}" if isinstance(v, str) else f"{k}={v}" for k, v in params.items()]
    return "\n".join(lines + [f"merged = {method}({', '.join(names + args)})"]) + "\n"


@pytest.mark.parametrize("path", ["sliced", "whole"])
def test_twenty_models_through_the_engine_give_the_method_on_whole_tensors(path, twenty, tmp_path, monkeypatch):
    """Sliced (a key larger than the arena): the engine hands the model files over as Operands that read the
    slices asked for from the file (nothing mapped), and no read is more than a slice. Whole (the arena holds
    the key): each input's key is read once, past the page cache, and the passes run in memory. Either way
    the result is the method called on the whole tensors."""
    from lib_merge.engine import streamed

    reads: dict[tuple[str, str], list[tuple[int, int]]] = {}
    plain, plain_direct = SafetensorsFile.read_range, SafetensorsFile.read_direct

    def record(self, key, start, end, into=None):
        reads.setdefault((self.path, key), []).append((start, end))
        return plain(self, key, start, end, into)

    def record_direct(self, key, into):
        reads.setdefault((self.path, key), []).append((0, math.prod(self.tensors[key].shape)))
        return plain_direct(self, key, into)

    monkeypatch.setattr(SafetensorsFile, "read_range", record)
    monkeypatch.setattr(SafetensorsFile, "read_direct", record_direct)
    if path == "sliced":
        monkeypatch.setattr(streamed, "WHOLE_READ_MAX", 0)
    loaded = [load(p) for p in twenty]
    for method in STREAMED:
        reads.clear()
        out = load(merge(recipe(method, twenty, **PARAMS[method]), tmp_path / f"{method}.safetensors").path)
        for key in (KEY, "model.diffusion_model.out.2.bias"):
            expected = call(method, [m[key].float() for m in loaded], key).half()
            assert torch.equal(out[key], expected), (method, key)
        numel = loaded[0][KEY].numel()
        limit = max(operand.MIN_SLICE, operand.STREAM_ELEMENTS // 20) if path == "sliced" else numel
        for p in map(str, twenty):
            spans = sorted(set(reads[(p, KEY)]))
            assert spans[0][0] == 0 and spans[-1][1] == numel and all(e - s <= limit for s, e in spans), method
            assert all(a[1] <= b[0] or a[0] == b[0] for a, b in zip(spans, spans[1:])), method
            if path == "whole":
                assert reads[(p, KEY)] == [(0, numel)], method  # once, whatever the method's passes


def test_a_merge_inside_a_many_model_step(twenty, tmp_path):
    paths = twenty[:5]
    text = recipe("ties", paths, density=0.4).replace("M2, M3", "weighted_sum(M2, M3, alpha=0.25)")
    out = load(merge(text, tmp_path / "nested.safetensors", torch.float32).path)
    a, b, c, d, e = (load(p)[KEY].float() for p in paths)
    expected = modern.ties(a, b, torch.lerp(c, d, 0.25), e, alpha=1.0, density=0.4, sign="sum")
    np.testing.assert_allclose(out[KEY].numpy(), expected.numpy(), rtol=1e-6, atol=1e-6)


def test_range_reads_are_the_stored_elements(tmp_path):
    path = tmp_path / "kinds.safetensors"
    tensors = {
        "pad": torch.ones(7, dtype=torch.int8),
        "h": torch.randn(3, 1001).half(),
        "b": torch.randn(50, 3).bfloat16(),
        "f": torch.randn(999),
        "e": torch.randn(64).to(torch.float8_e4m3fn),
    }
    save_file(tensors, str(path))
    f = SafetensorsFile(str(path))
    try:
        for key in ("h", "b", "f"):
            flat = tensors[key].reshape(-1)
            for start, end in ((0, flat.numel()), (13, 14), (5, 2000 if key == "h" else 100), (7, 7)):
                assert torch.equal(f.range_reader(key)(start, end), flat[start:end]), (key, start, end)
        assert f.range_reader("e") is None and f.range_reader("pad") is None  # widened or kept whole, not sliced
    finally:
        f.close()


_GROWTH = """
import sys
import torch
from lib_merge.engine import streamed
from lib_merge.engine.to_file import SaveOptions, merge_to_file
from lib_merge.recipe import parse_recipe
streamed.WHOLE_READ_MAX = int(sys.argv[1])
text, out = open(sys.argv[2], encoding="utf-8").read(), sys.argv[3]
def status(field):
    return next(int(line.split()[1]) * 1024 for line in open("/proc/self/status") if line.startswith(field))
merge_to_file(parse_recipe(text), SaveOptions(out, dtype=torch.float16))  # numba loaded, the files hashed
open("/proc/self/clear_refs", "w").write("5")  # the high-water mark from here
before = status("VmRSS:")
merge_to_file(parse_recipe(text), SaveOptions(out, dtype=torch.float16, overwrite=True))
print(status("VmHWM:") - before)
"""


def _rss_growth(tmp_path, method: str, paths: list[Path], whole_read_max: int, **params) -> int:
    """Peak resident bytes above the start of a merge of `paths`, in a process of its own that merged them once
    before (numba's kernels loaded, the files hashed)."""
    import subprocess
    import sys

    text = tmp_path / f"{method}_{len(paths)}.alloy"
    text.write_text(recipe(method, paths, **params), encoding="utf-8")
    out = tmp_path / f"out_{method}_{len(paths)}.safetensors"
    env = {**os.environ, "ALLOY_HOME": str(tmp_path / "home"), "PYTHONPATH": str(Path(__file__).parents[1])}
    done = subprocess.run([sys.executable, "-c", _GROWTH, str(whole_read_max), str(text), str(out)],
                          capture_output=True, text=True, env=env, timeout=300)  # fmt: skip
    assert done.returncode == 0, done.stderr[-2000:]
    out.unlink()
    return int(done.stdout.split()[-1])


@pytest.mark.skipif(not Path("/proc/self/clear_refs").exists(), reason="needs Linux's /proc/self/clear_refs")
def test_memory_does_not_grow_with_the_count(tmp_path):
    """One 4M-element tensor per file (8 MB in fp16, 16 MB as fp32). Read a slice at a time, merging 24 of them
    holds no more than merging 4 (all at once, 24 inputs would be 24 × 24 MB). Read whole, the inputs go to the
    arena only while they fit it (here made 48 MB, room for the 5 files and not for the 25): the memory is
    bounded by the arena, whatever the count."""
    gen = torch.Generator().manual_seed(3)
    paths = []
    for i in range(25):
        path = tmp_path / f"big_{i}.safetensors"
        save_file({"w": torch.randn(2048, 2048, generator=gen).half()}, str(path))
        paths.append(path)
    for whole_read_max in (0, 48 << 20):
        for method in ("ties", "model_stock", "geometric_median", "n_average"):
            params = {"max_iter": 3} if method == "geometric_median" else {}
            growth = {n: _rss_growth(tmp_path, method, paths[:n], whole_read_max, **params) for n in (5, 25)}
            assert growth[25] < growth[5] + 40e6, (method, whole_read_max, growth)
            if whole_read_max:  # the five were read whole into the arena: their 40 MB
                assert growth[5] > 40e6, (method, growth)


@pytest.mark.parametrize("method", ["ties", "dare_ties"])
@pytest.mark.parametrize("sign", ["sum", "count"])
def test_compiled_ties_gives_torchs_bits(method, sign, monkeypatch):
    """numba's trim, sign election and mean (many_kernels.py) against torch's, in slices; with zeros,
    negative zeros and deltas equal across models, where the election ties."""
    from lib_merge.methods import many

    assert many._compiled(operand.Operand(torch.zeros(1))) is not None  # numba is installed: the path is taken
    tensors = inputs(9, shape=(61, 47), seed=3)
    tensors[2][:5] = tensors[0][:5]  # δ = 0
    tensors[3][5:9] = -tensors[0][5:9] * 0  # some −0
    tensors[4][9:12] = tensors[5][9:12]  # equal deltas
    tensors[6][12:14] = 2 * tensors[0][12:14] - tensors[7][12:14]  # opposite deltas: sums of exactly 0
    tiny(monkeypatch)
    params = {**PARAMS[method], "sign": sign}
    spec = METHODS[method]
    key = {"key": KEY} if spec.needs_key else {}
    compiled = spec.fn(*[t.clone() for t in tensors], **params, **key)
    monkeypatch.setattr(many, "_compiled", lambda like: None)
    plain = spec.fn(*[t.clone() for t in tensors], **params, **key)
    np.testing.assert_array_equal(compiled.numpy().view(np.int32), plain.numpy().view(np.int32))


def test_compiled_election_keeps_torchs_nan_and_signed_zeros():
    from lib_merge.methods import many, many_kernels

    rng = np.random.default_rng(1)
    deltas = (rng.standard_normal((7, 3000)) * 0.01).astype(np.float32)
    deltas[:, :50] = 0
    deltas[:, 50:90] = -0.0
    deltas[0, 90:95] = np.nan
    deltas[1, 95:99] = np.inf
    limits = np.sort(np.abs(deltas), axis=1)[:, 3000 - 1200]  # each model's 1200th largest |δ| (NaN last)
    for trim in (True, False):
        for count in (True, False):
            reference = torch.from_numpy(deltas.copy())
            if trim:
                for d, t in zip(reference, limits, strict=True):
                    d.mul_(torch.abs(d).ge_(float(t)))
            expected = many.elect(list(reference), "count" if count else "sum").numpy()
            got = np.empty(3000, np.float32)
            many_kernels.elect(deltas.copy(), limits, trim, count, got)
            np.testing.assert_array_equal(got.view(np.int32), expected.view(np.int32))


class _Leaf:
    """A model file's leaf as the budget sees it: the key's stored size, and whether it reads past the cache."""

    def __init__(self, shape: tuple[int, ...], direct: bool):
        self.shape, self.direct = shape, direct

    def info(self, key):
        from lib_merge.io.safetensors_reader import TensorInfo

        return TensorInfo(key, torch.float16, self.shape, 0, 2 * math.prod(self.shape))

    def direct_bytes(self, key) -> int:
        return self.info(key).nbytes + 4096 if self.direct else 0


@pytest.mark.parametrize("direct", [False, True])
@pytest.mark.parametrize("method", STREAMED)
def test_three_of_sd1s_largest_streamed_keys_fit_in_the_budget_at_once(method, direct):
    """A key streamed from its files is charged what it holds, its output, its fp32 result and its slices. Three of
    SD1's largest convolutions fit in the budget: one computed by each worker and one finished, waiting for the
    keys before it to be written (results go out in order). Charged for TIES's magnitudes and masks too, as they
    once were, two did not, and a worker waited (py-spy: idle 15–25 % of an N-model average of 16 SD1.5 files).
    Read whole into the arena (`direct`), its inputs and result are the arena's: charged its output and slices,
    against the smaller budget kept beside the arena."""
    from lib_merge.engine import budget
    from lib_merge.engine.plan import KeyJob, Step
    from lib_merge.engine.streamed import held_bytes, reads_whole
    from lib_merge.io.writer import PlannedTensor

    key, shape = "model.diffusion_model.middle_block.0.in_layers.2.weight", (1280, 1280, 3, 3)
    inputs = tuple(_Leaf(shape, direct) for _ in range(16))  # sixteen model files' leaves
    job = KeyJob(key, PlannedTensor(key, torch.float16, shape), Step(METHODS[method], inputs, {}), cast=True)
    cost = held_bytes(job, torch.device("cpu"), from_files=True)
    numel = math.prod(shape)
    assert reads_whole(job.tree, key, torch.device("cpu"), True) == direct
    if direct:
        assert cost >= 2 * numel + 4 * operand.STREAM_ELEMENTS  # fp16 output, the slices
        assert 3 * cost <= budget.in_flight_bytes(arena_used=True)
    else:
        assert cost >= 2 * numel + 4 * numel + 4 * operand.STREAM_ELEMENTS  # fp16 output, fp32 result, the slices
        assert 3 * cost <= budget.in_flight_bytes(arena_used=False)
