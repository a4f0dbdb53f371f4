"""Re-basin on full-size checkpoints against a plain merge of the same files, in one run.

    python bench/rebasin.py [--arch sd1 sdxl] [--case perm finetune independent] [--noise 0.01]

Needs bench/models/<arch>_a.safetensors (and _b for the independent case: python
bench/make_models.py). Model B of each case:
- perm: A with every permutation group reordered by a random permutation (the truth, kept in
  <arch>_perm.truth.safetensors) plus Gaussian noise of std --noise (A's weights have std 0.02);
  written once to bench/models/<arch>_perm.safetensors, streamed key by key;
- finetune: A plus Gaussian noise of std --finetune-noise, not permuted (two models from one base;
  the truth is the identity, and the argmax fast path should settle every group); written once to
  <arch>_finetune.safetensors;
- independent: <arch>_b.safetensors, made from another seed (two independently initialised models:
  every feed-forward group needs the assignment solver).
Then, for each case, each as its own CLI process with an empty user-data folder (so hashes and
permutations are computed, not read from a cache):
- baseline: `merge --a A --b B --mode weighted_sum --alpha 0.5 -o OUT`;
- `rebasin --a A --b B --alpha 0.5 -o OUT` (hashing, matching, merging, writing);
- the same again with the permutation cache of the previous run (what an alpha sweep costs).
Reported: wall time and peak RSS of each process, the ratio to the baseline, the merge's re-basin
note (matching time, sweeps, groups permuted, solver calls), and how many groups' permutations
equal the truth (perm, finetune).
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
WARM_BUFFER = bytearray(1 << 24)


def make_variant(a_path: Path, out: Path, truth_path: Path, noise: float, permute: bool, seed: int = 3) -> None:
    """B = A with each group's windows reordered by a random permutation (or none), plus noise; one
    tensor at a time. The truth file holds each group's permutation (the identity when not permuted)."""
    import torch
    from safetensors.torch import save_file

    from lib_merge.io.source import SourceModel
    from lib_merge.io.writer import PlannedTensor, SafetensorsWriter
    from lib_merge.rebasin.groups import permutation_groups

    source = SourceModel(str(a_path))
    groups = permutation_groups(source.shapes, source.arch.id)
    gen = torch.Generator().manual_seed(seed)
    truth = {g.name: torch.randperm(g.size, generator=gen) if permute else torch.arange(g.size) for g in groups}
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


def measured(args: list[str], home: Path, out: Path) -> tuple[float, float, str]:
    """(seconds, peak RSS in GB, stderr) of one CLI process writing `out`, which is removed first (an
    overwrite would hold two SDXL outputs on the disk at once)."""
    out.unlink(missing_ok=True)
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

    """(groups whose found π undoes the truth's, groups)."""
    (cache,) = (home / "rebasin").glob("*.safetensors")
    found, truth = load_file(str(cache)), load_file(str(truth_path))
    right = sum(torch.equal(found[name].long(), torch.argsort(p)) for name, p in truth.items())
    return right, len(truth)


def model_b(arch: str, case: str, args: argparse.Namespace) -> tuple[Path, Path | None]:
    """Model B of a case (written if missing) and its truth file (None: unknown)."""
    a = MODELS / f"{arch}_a.safetensors"
    if case == "independent":
        b = MODELS / f"{arch}_b.safetensors"
        if not b.exists():
            raise SystemExit(f"missing {b}: run python bench/make_models.py --arch {arch}")
        return b, None
    b, truth = MODELS / f"{arch}_{case}.safetensors", MODELS / f"{arch}_{case}.truth.safetensors"
    if not (b.exists() and truth.exists()):
        started = time.perf_counter()
        noise = args.noise if case == "perm" else args.finetune_noise
        make_variant(a, b, truth, noise, permute=case == "perm")
        print(f"wrote {b} ({time.perf_counter() - started:.0f} s)")
    return b, truth


DESCRIBED = {
    "perm": "A permuted + noise {noise}",
    "finetune": "A + noise {finetune_noise} (one base, not permuted)",
    "independent": "{arch}_b, another seed (independently initialised)",
}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--arch", nargs="+", default=["sd1", "sdxl"], choices=["sd1", "sdxl"])
    ap.add_argument("--case", nargs="+", default=list(DESCRIBED), choices=list(DESCRIBED))
    ap.add_argument("--noise", type=float, default=0.01, help="perm: the noise's std")
    ap.add_argument("--finetune-noise", type=float, default=0.002, help="finetune: the noise's std")
    ap.add_argument("--out-dir", type=Path, default=MODELS)
    args = ap.parse_args()
    for arch in args.arch:
        a = MODELS / f"{arch}_a.safetensors"
        if not a.exists():
            raise SystemExit(f"missing {a}: run python bench/make_models.py --arch {arch}")
        for case in args.case:
            b, truth = model_b(arch, case, args)
            run_case(arch, case, a, b, truth, args)


def run_case(arch: str, case: str, a: Path, b: Path, truth: Path | None, args: argparse.Namespace) -> None:
    out = args.out_dir / f"{arch}_bench_out.safetensors"
    common = ["-o", str(out), "--overwrite", "--no-history"]
    for path in (a, b):  # into the page cache, so the first run does not pay the disk alone
        with open(path, "rb") as f:
            while f.readinto(WARM_BUFFER):
                pass
    with tempfile.TemporaryDirectory() as plain_home, tempfile.TemporaryDirectory() as home:
        base = measured(["merge", "--a", str(a), "--b", str(b), "--mode", "weighted_sum", "--alpha", "0.5",
                         *common], Path(plain_home), out)  # fmt: skip
        cold = measured(["rebasin", "--a", str(a), "--b", str(b), "--alpha", "0.5", *common], Path(home), out)
        warm = measured(["rebasin", "--a", str(a), "--b", str(b), "--alpha", "0.3", *common], Path(home), out)
        right, total = recovered(Path(home), truth) if truth is not None else (None, None)
    note = re.search(r"re-basin: matched .*", cold[2])
    described = DESCRIBED[case].format(arch=arch, noise=args.noise, finetune_noise=args.finetune_noise)
    print(f"\n{arch} {case}: A {a.stat().st_size / 1e9:.1f} GB, B = {described}")
    print(f"  {'run':<36}{'wall s':>8}{'peak RSS GB':>13}{'× plain':>9}")
    for label, (seconds, rss, _) in (
        ("plain weighted_sum merge (baseline)", base),
        ("rebasin --alpha 0.5 (match + merge)", cold),
        ("rebasin --alpha 0.3 (cached)", warm),
    ):
        print(f"  {label:<36}{seconds:8.1f}{rss:13.2f}{seconds / base[0]:9.2f}")
    print(f"  note: {note.group(0) if note else '?'}")
    if right is not None:
        print(f"  groups matching the truth: {right}/{total}")
    out.unlink(missing_ok=True)


if __name__ == "__main__":
    main()
