"""bench/gpu.py runs end to end on miniature models with --device cpu: the four tables, each row a time
and its ratio to the table's first row (the baseline measured in the same run)."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from lib_merge.io.synth import SynthSpec, write_synthetic

ROOT = Path(__file__).resolve().parents[1]
TABLES = ["File merge", "Live merge into fp16 parameters", "Methods, three models", "Methods, two models",
          "LoRA extract"]  # fmt: skip
ROW = re.compile(r"^\| (.+) \| (\d+\.\d\d) \| (\d+\.\d\d)× \|$")


def test_the_gpu_bench_prints_its_four_tables_with_ratios_on_the_cpu(tmp_path):
    for role, seed in (("a", 1), ("b", 2), ("c", 3)):
        write_synthetic(str(tmp_path / f"sd1_{role}.safetensors"), SynthSpec(arch="sd1", scale=64, seed=seed))
    before = sorted(os.listdir(tmp_path))
    env = dict(os.environ, PYTHONPATH=str(ROOT), ALLOY_HOME=str(tmp_path / "home"), OMP_NUM_THREADS="1")
    command = [sys.executable, str(ROOT / "bench" / "gpu.py"), "--device", "cpu", "--models", str(tmp_path),
               "--repeat", "1", "--rank", "2"]  # fmt: skip
    proc = subprocess.run(command, capture_output=True, text=True, env=env, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    blocks = proc.stdout.split("\n\n")
    titles = [b for b in blocks if b.split(":")[0].startswith(tuple(TABLES))]
    assert [next(t for t in TABLES if b.startswith(t)) for b in titles] == TABLES, proc.stdout
    for title in titles:
        assert "`python -m lib_merge" in title or "`Settings → Alloy" in title  # each table names its command
        rows = [ROW.match(line) for line in blocks[blocks.index(title) + 1].splitlines()[2:]]
        assert len(rows) >= 2 and all(rows), blocks[blocks.index(title) + 1]
        assert rows[0].group(3) == "1.00"
        base = float(rows[0].group(2))
        for row in rows[1:] if base > 0.005 else []:  # each ratio is its time over the baseline's, as rounded
            seconds, ratio = float(row.group(2)), float(row.group(3))
            assert (seconds - 0.005) / (base + 0.005) - 0.005 <= ratio <= (seconds + 0.005) / (base - 0.005) + 0.005
    assert set(os.listdir(tmp_path)) - {"home"} == set(before)  # no output left behind


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the refusal where CUDA is absent")
def test_the_gpu_bench_refuses_a_device_this_machine_lacks_in_one_line(tmp_path):
    env = dict(os.environ, PYTHONPATH=str(ROOT), ALLOY_HOME=str(tmp_path))
    command = [sys.executable, str(ROOT / "bench" / "gpu.py"), "--device", "cuda", "--models", str(tmp_path)]
    proc = subprocess.run(command, capture_output=True, text=True, env=env, timeout=120)
    assert proc.returncode == 1 and proc.stderr.strip().splitlines() == [
        "error: device 'cuda' asked for, but CUDA is not available here (this torch is built without CUDA); use cpu"
    ]
