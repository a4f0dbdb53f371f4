"""Re-basin on full-size checkpoints whose answer is known, against a plain merge of the same files.

    python bench/rebasin.py [--arch sd1 sdxl] [--noise 0.01]

Needs bench/models/<arch>_a.safetensors (python bench/make_models.py). Writes once
bench/models/<arch>_perm.safetensors: A with every permutation group reordered by a random
permutation (the truth, kept in <arch>_perm.truth.safetensors) plus Gaussian noise of std --noise
(A's weights have std 0.02), streamed key by key. Then, each as its own CLI process with an empty
user-data folder (so hashes and permutations are computed, not read from a cache), in one run:
- baseline: `merge --a A --b B --mode weighted_sum --alpha 0.5 -o OUT`;
- `rebasin --a A --b B --alpha 0.5 -o OUT` (hashing, matching, merging, writing);
- the same again with the permutation cache of the previous run (what an alpha sweep costs).
Reported: wall time and peak RSS of each process, the ratio to the baseline, the matching time the
merge notes, and how many groups' permutations equal the truth's inverse.
"""

from __future__ import annotations

import argparse
import os
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
MODELS = ROOT / "bench" / "models"


def make_permuted(a_path: Path, out: Path, truth_path: Path, noise: float, seed: int = 3) -> None:
    """B = A with each group's windows reordered by a random permutation, plus noise; one tensor at a time."""
    import torch
    from safetensors.torch import save_file

    from lib_merge.io.source import SourceModel
    from lib_merge.io.writer import PlannedTensor, SafetensorsWriter
    from lib_merge.rebasin.groups import permutation_groups

    source = SourceModel(str(a_path))
    groups = permutation_groups(source.shapes, source.arch.id)
    gen = torch.Generator().manual_seed(seed)
    truth = {g.name: torch.randperm(g.size, generator=gen) for g in groups}
    slices: dict[str, list] = {}
    for g in groups:
        for s in g.slices:
            slices.setdefault(s.key, []).append((s, truth[g.name]))
    keys = list(source.file.keys())
    plan = [PlannedTensor(k, source.file.tensors[k].dtype, tuple(source.file.tensors[k].shape)) for k in keys]
    writer = SafetensorsWriter(str(out), plan, {}, overwrite=True).open()
    try:
        for key in keys:
            t = source.file.read(key)
            if t.is_floating_point():
                w = t.float()
                for s, p in slices.get(key, []):
                    window = w.narrow(s.axis, s.start, len(p))
                    window.copy_(window.index_select(s.axis, p))
                w += noise * torch.randn(w.shape, generator=gen)
                t = w.to(t.dtype)
            writer.write(key, t)
        writer.finish({})
    except BaseException:
        writer.abort()
        raise
    finally:
        source.close()
    save_file({name: p.to(torch.int64) for name, p in truth.items()}, str(truth_path))


def measured(args: list[str], home: Path) -> tuple[float, float, str]:
    """(seconds, peak RSS in GB, stderr) of one CLI process."""
    subprocess.run(["sync"], check=True)
    env = dict(os.environ, ALLOY_HOME=str(home))
    start = time.perf_counter()
    proc = subprocess.Popen(
        [sys.executable, "-m", "lib_merge", "--no-progress", *args],
        cwd=ROOT,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    stderr = proc.stderr.read()
    _, status, usage = os.wait4(proc.pid, 0)
    seconds = time.perf_counter() - start
    proc.returncode = os.waitstatus_to_exitcode(status)
    if proc.returncode != 0:
        raise SystemExit(f"{' '.join(args)} failed ({proc.returncode}):\n{stderr}")
    return seconds, usage.ru_maxrss / 2**20, stderr


def recovered(home: Path, truth_path: Path) -> tuple[int, int]:
    import torch
    from safetensors.torch import load_file

    (cache,) = (home / "rebasin").glob("*.safetensors")
    found, truth = load_file(str(cache)), load_file(str(truth_path))
    right = sum(torch.equal(found[name].long(), torch.argsort(p)) for name, p in truth.items())
    return right, len(truth)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--arch", nargs="+", default=["sd1", "sdxl"], choices=["sd1", "sdxl"])
    ap.add_argument("--noise", type=float, default=0.01)
    ap.add_argument("--out-dir", type=Path, default=MODELS)
    args = ap.parse_args()
    for arch in args.arch:
        a = MODELS / f"{arch}_a.safetensors"
        if not a.exists():
            raise SystemExit(f"missing {a}: run python bench/make_models.py --arch {arch}")
        b, truth = MODELS / f"{arch}_perm.safetensors", MODELS / f"{arch}_perm.truth.safetensors"
        if not (b.exists() and truth.exists()):
            started = time.perf_counter()
            make_permuted(a, b, truth, args.noise)
            print(f"wrote {b} ({time.perf_counter() - started:.0f} s)")
        out = args.out_dir / f"{arch}_bench_out.safetensors"
        common = ["-o", str(out), "--overwrite", "--no-history"]
        with tempfile.TemporaryDirectory() as plain_home, tempfile.TemporaryDirectory() as home:
            base = measured(["merge", "--a", str(a), "--b", str(b), "--mode", "weighted_sum", "--alpha", "0.5",
                             *common], Path(plain_home))  # fmt: skip
            cold = measured(["rebasin", "--a", str(a), "--b", str(b), "--alpha", "0.5", *common], Path(home))
            warm = measured(["rebasin", "--a", str(a), "--b", str(b), "--alpha", "0.3", *common], Path(home))
            right, total = recovered(Path(home), truth)
        matched = re.search(r"matched \d+ groups in ([\d.]+) s", cold[2])
        print(f"\n{arch}: A {a.stat().st_size / 1e9:.1f} GB, B = A permuted + noise {args.noise}")
        print(f"  {'run':<36}{'wall s':>8}{'peak RSS GB':>13}{'× plain':>9}")
        for label, (seconds, rss, _) in (
            ("plain weighted_sum merge (baseline)", base),
            ("rebasin --alpha 0.5 (match + merge)", cold),
            ("rebasin --alpha 0.3 (cached)", warm),
        ):
            print(f"  {label:<36}{seconds:8.1f}{rss:13.2f}{seconds / base[0]:9.2f}")
        print(f"  matching alone: {matched.group(1) if matched else '?'} s; groups recovered: {right}/{total}")
        out.unlink(missing_ok=True)


if __name__ == "__main__":
    main()
