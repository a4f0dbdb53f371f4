"""The fast live path: model A from memory, B from the RAM cache, results written into the parameters,
exact against the file merge in every dtype pairing, checked for NaN/Inf wherever it could arise."""

from __future__ import annotations

import threading
from collections import Counter

import pytest
import torch
from helpers import build_model, load
from safetensors.torch import save_file
from test_merge import merge, recipe

from lib_merge.app.cache_budget import parse_cache_budget
from lib_merge.engine import live as live_module
from lib_merge.engine.live import LiveBackup, merge_into_model, model_tensors
from lib_merge.engine.options import EngineOptions
from lib_merge.errors import NonFiniteError
from lib_merge.io.cache import TensorCache
from lib_merge.io.safetensors_reader import SafetensorsFile
from lib_merge.recipe import parse_recipe

BIAS = "model.diffusion_model.out.2.bias"


@pytest.fixture
def reads(monkeypatch) -> Counter:
    """Tensors read from disk, counted per file name."""
    counted: Counter = Counter()
    real_read, real_view = SafetensorsFile.read, SafetensorsFile.view

    def read(self, key):
        counted[self.path.rsplit("/", 1)[-1]] += 1
        return real_read(self, key)

    def view(self, key):
        counted[self.path.rsplit("/", 1)[-1]] += 1
        return real_view(self, key)

    monkeypatch.setattr(SafetensorsFile, "read", read)
    monkeypatch.setattr(SafetensorsFile, "view", view)
    return counted


def snapshot(model) -> dict[str, torch.Tensor]:
    return {k: t.detach().clone() for k, t in model_tensors(model).items()}


def live(text: str, model, backup: LiveBackup, cache: TensorCache | None = None):
    return merge_into_model(parse_recipe(text), model, backup, EngineOptions(cache=cache))


@pytest.mark.parametrize("dtype", [torch.float16, torch.float32])
def test_a_comes_from_memory_and_b_from_the_cache_after_the_first_merge(sd1, tmp_path, reads, dtype):
    model = build_model(load(sd1[0]), dtype)
    backup, cache = LiveBackup(), TensorCache(1 << 30)
    live(recipe("weighted_sum", sd1[:2], alpha=0.3), model, backup, cache)
    assert reads[sd1[0].name] == 0  # A: the loaded model's own values
    assert reads[sd1[1].name] > 1000
    reads.clear()
    text = recipe("weighted_sum", sd1[:2], alpha=0.6)
    result = live(text, model, backup, cache)
    assert sum(reads.values()) == 0  # a repeated merge touches no disk
    saved = load(merge(text, tmp_path / "m.safetensors", dtype).path)
    tensors = model_tensors(model)
    assert all(torch.equal(tensors[k], v) for k, v in saved.items())
    assert result.patched > 1000


def test_fp32_parameters_of_an_fp16_file_keep_half_size_backups(sd1):
    model = build_model(load(sd1[0]), torch.float32)
    original = snapshot(model)
    backup = LiveBackup()
    live(recipe("weighted_sum", sd1[:2], alpha=0.5), model, backup)
    floats = [t for t in backup.originals.values() if t.is_floating_point()]
    assert floats and all(t.dtype == torch.float16 for t in floats)
    backup.restore(model)
    assert all(torch.equal(model_tensors(model)[k], v) for k, v in original.items())


def test_a_value_the_host_changed_is_kept_exactly_and_the_merge_reads_a_from_the_file(sd1, tmp_path, reads):
    model = build_model(load(sd1[0]), torch.float32)
    with torch.no_grad():
        model_tensors(model)[BIAS].add_(1e-4)  # no longer an fp16 value
    changed = snapshot(model)
    backup = LiveBackup()
    text = recipe("weighted_sum", sd1[:2], alpha=0.5)
    live(text, model, backup)
    assert backup.originals[BIAS].dtype == torch.float32
    assert reads[sd1[0].name] == 1  # that one key, from the file
    saved = load(merge(text, tmp_path / "m.safetensors", torch.float32).path)
    assert torch.equal(model_tensors(model)[BIAS], saved[BIAS])
    backup.restore(model)
    assert all(torch.equal(model_tensors(model)[k], v) for k, v in changed.items())


@pytest.mark.parametrize("where", [0, 5000, -1])
def test_a_changed_value_anywhere_in_a_large_tensor_keeps_its_backup_wide(sd1, monkeypatch, where):
    """Backups are narrowed and checked a chunk at a time: a value off the fp16 grid in the first, a
    middle or the last chunk keeps that tensor's backup in fp32; the others stay half size."""
    monkeypatch.setattr(live_module, "COMPARE_CHUNK", 1000)
    model = build_model(load(sd1[0]), torch.float32)
    key = max(model_tensors(model).items(), key=lambda item: item[1].numel())[0]
    assert model_tensors(model)[key].numel() > 5 * 1000
    with torch.no_grad():
        model_tensors(model)[key].view(-1)[where] += 1e-4
    changed = snapshot(model)
    backup = LiveBackup()
    live(recipe("weighted_sum", sd1[:2], alpha=0.5), model, backup)
    assert backup.originals[key].dtype == torch.float32
    for name, kept in backup.originals.items():
        assert torch.equal(kept.to(torch.float32), changed[name]) or not kept.is_floating_point()
        assert kept.dtype == torch.float16 or name == key or not kept.is_floating_point()
    backup.restore(model)
    assert all(torch.equal(model_tensors(model)[k], v) for k, v in changed.items())


def test_an_fp32_file_in_fp16_parameters_reads_a_from_the_file_for_the_exact_result(sd1_fp32, tmp_path):
    model = build_model(load(sd1_fp32[0]), torch.float16)
    backup, cache = LiveBackup(), TensorCache(1 << 30)
    text = recipe("add_difference", sd1_fp32, alpha=0.7)
    for _ in range(2):  # the second from the cache
        live(text, model, backup, cache)
        saved = load(merge(text, tmp_path / "m.safetensors", torch.float16, overwrite=True).path)
        tensors = model_tensors(model)
        assert all(torch.equal(tensors[k], v) for k, v in saved.items())


def with_values(source, path, changes: dict[str, float]):
    state = load(source)
    for key, value in changes.items():
        state[key] = torch.full_like(state[key], value)
    save_file(state, str(path))
    return path


def test_nan_in_b_is_refused_on_every_merge_even_from_the_cache(sd1, tmp_path):
    b = with_values(sd1[1], tmp_path / "b_nan.safetensors", {BIAS: float("nan")})
    model = build_model(load(sd1[0]), torch.float16)
    before = snapshot(model)
    backup, cache = LiveBackup(), TensorCache(1 << 30)
    for _ in range(2):
        with pytest.raises(NonFiniteError, match=BIAS):
            live(recipe("weighted_sum", [sd1[0], b], alpha=0.5), model, backup, cache)
        assert all(torch.equal(model_tensors(model)[k], v) for k, v in before.items())


def test_overflow_is_caught_when_alpha_leaves_0_1_and_not_raised_inside_it(sd1, tmp_path):
    a = with_values(sd1[0], tmp_path / "a_big.safetensors", {BIAS: -60000.0})
    b = with_values(sd1[1], tmp_path / "b_big.safetensors", {BIAS: 60000.0})
    model = build_model(load(a), torch.float16)
    backup, cache = LiveBackup(), TensorCache(1 << 30)
    live(recipe("weighted_sum", [a, b], alpha=0.25), model, backup, cache)  # within the inputs: fine
    assert float(model_tensors(model)[BIAS][0]) == -30000.0
    with pytest.raises(NonFiniteError, match=BIAS):
        live(recipe("weighted_sum", [a, b], alpha=2.0), model, backup, cache)  # -60000 + 2 * 120000
    assert float(model_tensors(model)[BIAS][0]) == -60000.0  # all or nothing: model A again


def test_the_backups_count_against_the_cache_budget(sd1):
    model = build_model(load(sd1[0]), torch.float16)
    backup = LiveBackup()
    b_bytes = sum(t.numel() * t.element_size() for t in load(sd1[1]).values())
    a_bytes = sum(t.numel() * t.element_size() for t in load(sd1[0]).values())
    cache = TensorCache(a_bytes + b_bytes // 2)
    live(recipe("weighted_sum", sd1[:2], alpha=0.5), model, backup, cache)
    stats = cache.stats()
    assert cache.reserved == backup.nbytes > 0
    assert 0 < stats.bytes_used <= cache.budget - backup.nbytes
    assert stats.bytes_used + backup.nbytes <= a_bytes + b_bytes // 2


def test_cache_reserve_evicts_what_no_longer_fits():
    cache = TensorCache(100)
    for k in "abcd":
        cache.put(("/m", 1, 1), k, torch.zeros(25, dtype=torch.uint8))
    cache.reserve(60)
    assert cache.stats().bytes_used == 25 and cache.get(("/m", 1, 1), "d") is not None
    cache.put(("/m", 1, 1), "e", torch.zeros(25, dtype=torch.uint8))
    assert cache.stats().bytes_used == 25 and cache.get(("/m", 1, 1), "d") is None
    cache.put(("/m", 1, 1), "f", torch.zeros(45, dtype=torch.uint8))  # beyond what is left: not kept
    assert cache.get(("/m", 1, 1), "f") is None


def test_peaks_of_cached_tensors():
    cache = TensorCache(1000)
    cache.put(("/m", 1, 1), "x", torch.tensor([1.0, -3.0, 2.0]))
    cache.put(("/m", 1, 1), "n", torch.tensor([1.0, float("nan")]))
    assert cache.peak(("/m", 1, 1), "x") == 3.0
    assert cache.peak(("/m", 1, 1), "n") != cache.peak(("/m", 1, 1), "n")  # NaN
    assert cache.peak(("/m", 1, 1), "missing") == float("inf")


def test_merge_workers_leave_torch_threads_as_they_were(sd1):
    before = torch.get_num_threads()
    model = build_model(load(sd1[0]), torch.float16)
    live(recipe("weighted_sum", sd1[:2], alpha=0.5), model, LiveBackup())
    assert torch.get_num_threads() == before
    seen = []
    thread = threading.Thread(target=lambda: seen.append(torch.get_num_threads()))
    thread.start()
    thread.join()
    assert seen == [before]


def test_auto_cache_budget_counts_reclaimable_page_cache():
    with open("/proc/meminfo") as f:
        available = next(int(line.split()[1]) * 1024 for line in f if line.startswith("MemAvailable:"))
    budget = parse_cache_budget("auto")
    assert abs(budget - min(available // 4, 16 * 2**30)) < 256 * 2**20


def test_an_auto_cache_is_kept_from_merge_to_merge():
    """Sized once: the free memory moves with every merge, and a new size must not empty the cache."""
    from lib_merge.app.ports import HostConfig
    from lib_merge.app.workbench import Workbench

    class Host:
        setting = "auto"

        def config(self) -> HostConfig:
            return HostConfig(cache_budget=self.setting)

    host = Host()
    workbench = Workbench(host)
    cache = workbench.cache()
    assert cache is not None and workbench.cache() is cache
    host.setting = "0"
    assert workbench.cache() is None


def test_the_merge_tab_tells_where_inputs_come_from_and_the_result_line_gives_time_count_and_cache(webui):
    """A first merge reads B from disk, the next only from RAM; progress says which, with counts and
    bytes, and the result line gives the time, the tensors and the RAM cache in use."""
    import re

    from lib_merge.app.progress import Progress
    from lib_merge.app.requests import MergeRequest
    from lib_merge.recipe.form import MergeSettings

    bench = webui.workbench
    events, texts = [], []
    real = bench.progress_event

    def record(event):
        real(event)
        events.append(event)
        texts.append(bench.progress.text())

    bench.progress_event = record
    outcomes = []
    for alpha in (0.3, 0.6):
        events.clear()
        settings = MergeSettings(webui.title("model_a"), webui.title("model_b"), alpha=alpha)
        outcomes.append((bench.merge(MergeRequest(settings=settings)), [e for e in events if e.phase == "merging"]))
    (first, first_events), (second, second_events) = outcomes
    assert {e.item for e in first_events} == {"reading from disk"}
    assert {e.item for e in second_events} == {"inputs in RAM"}
    assert first_events[-1].done == first_events[-1].total > 1000 and first_events[-1].unit == "tensors"
    line = r"Merged \S+ into the loaded model in \d+\.\d s, 1,\d{3} tensors, cache \d+\.\d GB\."
    assert re.match(line, first.message) and re.match(line, second.message), second.message
    assert any(re.search(r"merging into the loaded model: [\d,]+/[\d,]+ tensors, [\d,]+/[\d,]+ MB, inputs in RAM", t)
               for t in texts), texts[-3:]  # fmt: skip
    from lib_merge.engine.progress import ProgressEvent

    shown = Progress("merging into the loaded model")
    shown.update(ProgressEvent("merging", 565, 1130, "tensors", 2**30, 2**31, "reading from disk"))
    shown.started["merging"] -= 10  # half the bytes in 10 s
    assert shown.text() == (
        "merging into the loaded model: 565/1,130 tensors, 1,024/2,048 MB, reading from disk, ETA 10 s"
    )


def test_backups_beyond_the_budget_stay_on_file_and_restore_from_it(sd1, tmp_path, reads):
    """SDXL in fp32 leaves no room for a second copy: beyond the RAM budget an original that equals
    model A's file is restored from the file; merges and Restore stay exact."""
    model = build_model(load(sd1[0]), torch.float32)
    original = snapshot(model)
    backup, cache = LiveBackup(), TensorCache(64 * 1024)
    for alpha in (0.3, 0.7):
        text = recipe("weighted_sum", sd1[:2], alpha=alpha)
        live(text, model, backup, cache)
        if alpha == 0.3:  # each such key read once: compared with the model, then merged from that read
            assert reads[sd1[0].name] == len(backup.on_file)
        saved = load(merge(text, tmp_path / "m.safetensors", torch.float32, overwrite=True).path)
        assert all(torch.equal(model_tensors(model)[k], v) for k, v in saved.items())
    assert len(backup.on_file) > 1000 and backup.nbytes <= 64 * 1024
    assert cache.reserved <= cache.budget
    assert backup.restore(model) > 1000
    assert all(torch.equal(model_tensors(model)[k], v) for k, v in original.items())


def test_a_restore_from_a_file_changed_on_disk_is_refused(sd1, tmp_path):
    import os
    import shutil

    from lib_merge.errors import HostPatchError

    a = tmp_path / "a.safetensors"
    shutil.copy(sd1[0], a)
    model = build_model(load(a), torch.float16)
    backup = LiveBackup()
    live(recipe("weighted_sum", [a, sd1[1]], alpha=0.5), model, backup, TensorCache(1024))
    os.utime(a, ns=(1, 1))
    with pytest.raises(HostPatchError, match="changed on disk since it was loaded"):
        backup.restore(model)


def test_which_merges_count_as_bounded():
    """The finite check is skipped only where finite inputs cannot give NaN/Inf: convex combinations."""
    from lib_merge.methods import METHODS

    assert METHODS["weighted_sum"].bounded({"alpha": 0.0}) and METHODS["weighted_sum"].bounded({"alpha": 1.0})
    assert not METHODS["weighted_sum"].bounded({"alpha": 1.5})
    assert not METHODS["weighted_sum"].bounded({"alpha": -0.1})
    assert METHODS["sum_twice"].bounded({"alpha": 0.9, "beta": 0.9})  # two lerps, each between its inputs
    assert METHODS["triple_sum"].bounded({"alpha": 0.3, "beta": 0.3})
    assert not METHODS["triple_sum"].bounded({"alpha": 0.6, "beta": 0.6})  # A gets weight -0.2
    assert not METHODS["add_difference"].bounded({"alpha": 0.5})
