"""The arguments of the commands that work on LoRA files and on single checkpoints (lora, toolkit)."""

from __future__ import annotations

from lib_merge.app.lora_requests import LoraExtractRequest, LoraMergeRequest, default_of
from lib_merge.surfaces.cli.arg_types import finite_float, whole_number

# The output dtypes (io.dtypes.OUTPUT_DTYPES), spelt out here: the parser is built without importing torch.
SAVE_DTYPES = ["fp16", "bf16", "fp32", "fp8_e4m3fn", "fp8_e5m2"]


def save_dtype_options(p, dtype_help: str) -> None:
    """--dtype and --clamp of a command that writes a checkpoint."""
    p.add_argument("--dtype", choices=SAVE_DTYPES, help=dtype_help)
    p.add_argument(
        "--clamp",
        action="store_true",
        help="fp8 dtypes: clamp values beyond the format's range (±448 e4m3fn, ±57344 e5m2) instead of refusing",
    )


def _of(request: type, name: str) -> str:
    return f"default {default_of(request, name)}"


def lora_commands(sub) -> None:
    lo = sub.add_parser("lora", help="LoRA files: inspect, bake into a checkpoint, merge, extract")
    lsub = lo.add_subparsers(dest="lora_command", required=True, parser_class=type(lo))
    li = lsub.add_parser("inspect", help="module types, ranks, alphas, base model, matched/unmatched modules")
    li.add_argument("file")
    li.add_argument("--model", help="match against this checkpoint (default: the base's reference layout)")
    li.add_argument("--json", action="store_true")
    lb = lsub.add_parser("bake", help="bake LoRAs into a checkpoint: W + Σ strength · ΔW, written to -o OUT")
    lb.add_argument("--model", required=True, help="the checkpoint (model A)")
    lb.add_argument(
        "--lora",
        action="append",
        required=True,
        metavar="FILE:STRENGTH[:BLOCKS]",
        help="a LoRA, its strength (default 1) and block weights (a preset such as INS, or 17/26 values for SD1, "
        "12/20 for SDXL); repeat for more",
    )
    lb.add_argument("-o", "--output", help="the baked checkpoint")
    save_dtype_options(lb, "default: fp16")
    lb.add_argument("--device", default="cpu")
    lb.add_argument("--overwrite", action="store_true")
    lb.add_argument("--no-history", action="store_true", help="do not log this merge in history.csv")
    _lora_merge_command(lsub)
    _lora_extract_command(lsub)


def _lora_output_options(p, request: type) -> None:
    """-o and the options merge and extract share; defaults as `request` declares them."""

    p.add_argument("-o", "--output", help="the LoRA to write (.safetensors)")
    p.add_argument("--dtype", choices=["fp16", "bf16", "fp32"], help=_of(request, "dtype"))
    p.add_argument("--overwrite", action="store_true")
    p.add_argument("--clamp", type=finite_float, metavar="Q",
                   help="clamp up/down to the Q quantile of their absolute values "
                        f"(e.g. 0.99; 1 = off; {_of(request, 'clamp')})")  # fmt: skip
    p.add_argument("--full-svd", action="store_true", help="full SVD instead of the randomized one (slower)")
    p.add_argument("--seed", type=whole_number, help=f"seed of the randomized SVD ({_of(request, 'seed')})")
    p.add_argument("--max-rank", type=whole_number, help=f"cap of --energy and --ratio ({_of(request, 'max_rank')})")


def _lora_merge_command(lsub) -> None:
    lm = lsub.add_parser("merge", help="merge LoRAs into one: concat (exact) or svd (re-rank the summed ΔW)")
    lm.add_argument(
        "--lora", action="append", required=True, metavar="FILE:STRENGTH[:BLOCKS]", help="a LoRA; repeat for more"
    )
    lm.add_argument("--method", choices=["concat", "svd"], help=_of(LoraMergeRequest, "method"))
    rank = lm.add_mutually_exclusive_group()
    rank.add_argument("--rank", type=whole_number, help="svd: the output rank")
    rank.add_argument(
        "--energy", type=finite_float, help=f"svd: keep this share of the energy ({_of(LoraMergeRequest, 'energy')})"
    )
    lm.add_argument("--model", help="the base checkpoint: its layout, and its weights for IA3/DoRA inputs")
    _lora_output_options(lm, LoraMergeRequest)


def _lora_extract_command(lsub) -> None:
    le = lsub.add_parser("extract", help="extract a LoRA: ΔW = alpha·A − beta·B, factorised per module")
    le.add_argument("--a", required=True, help="the fine-tuned checkpoint")
    le.add_argument("--b", required=True, help="the base checkpoint")
    rank = le.add_mutually_exclusive_group()
    rank.add_argument("--rank", type=whole_number, help=f"linear rank ({_of(LoraExtractRequest, 'rank')})")
    rank.add_argument("--energy", type=finite_float, help="rank by energy share, e.g. 0.9")
    rank.add_argument("--ratio", type=finite_float, help="keep singular values ≥ ratio · the largest")
    le.add_argument("--conv-rank", type=whole_number, help="rank of the 3×3 convolutions (default: --rank; 0 = none)")
    le.add_argument("--alpha", type=finite_float, help=f"ΔW = alpha·A − beta·B ({_of(LoraExtractRequest, 'alpha')})")
    le.add_argument("--beta", type=finite_float, help=_of(LoraExtractRequest, "beta"))
    le.add_argument("--network-alpha", type=finite_float, help="the alpha to write (default: the rank, scale 1)")
    le.add_argument("--te-threshold", type=finite_float,
                    help="leave out a text encoder whose largest |ΔW| is at most this "
                         f"({_of(LoraExtractRequest, 'te_threshold')})")  # fmt: skip
    le.add_argument("--device", default="cpu", help="where ΔW is formed and factorised: cpu, cuda, cuda:N or mps")
    _lora_output_options(le, LoraExtractRequest)


def toolkit_commands(sub) -> None:
    """prune, convert, extract, replace, fingerprint."""
    pr = sub.add_parser("prune", help="keep the model's components (EMA on request), as fp16 safetensors by default")
    pr.add_argument("file")
    pr.add_argument("--keep-ema", action="store_true")
    pr.add_argument("--dtype", choices=[*SAVE_DTYPES, "keep"], default="fp16")
    cv = sub.add_parser("convert", help="a .ckpt/.pt/.bin or safetensors file as safetensors in another dtype")
    cv.add_argument("file")
    cv.add_argument("--dtype", choices=[*SAVE_DTYPES, "keep"], required=True)
    cv.add_argument("--clamp", action="store_true", help="clamp values beyond the range of fp16 (±65504) or fp8")
    for p in (pr, cv):
        p.add_argument("--fix-position-ids", action="store_true", help="reset CLIP-L position_ids to 0…76")
        p.add_argument("-o", "--output", help="default: <stem>-pruned / -converted .safetensors beside the input")
        p.add_argument("--overwrite", action="store_true")
    components = ["unet", "diffuser", "vae", "clip_l", "clip_g", "clip_h", "t5xxl"]
    ex = sub.add_parser("extract", help="one component to its own file, without the checkpoint's prefix")
    ex.add_argument("file")
    ex.add_argument("--component", required=True, choices=components)
    ex.add_argument("-o", "--output", help="default: <stem>.<component>.safetensors")
    ex.add_argument("--overwrite", action="store_true")
    rp = sub.add_parser("replace", help="a checkpoint with one component taken from another file")
    rp.add_argument("file")
    rp.add_argument("--component", required=True, choices=components)
    rp.add_argument("--from", dest="donor", required=True, help="a checkpoint or a component file")
    rp.add_argument("-o", "--output")
    rp.add_argument("--overwrite", action="store_true")
    fp = sub.add_parser("fingerprint", help="toolkit numbers (SD1/SD2), component hashes, the WebUI's file hashes")
    fp.add_argument("file")
    fp.add_argument("--json", action="store_true")
    ap = sub.add_parser("autoprune", help="prune every checkpoint of a folder to fp16 and move it where it belongs")
    ap.add_argument("folder")
    where = "the models folder: with Stable-diffusion/ and VAE/ as the WebUI has them, or the checkpoints' own"
    ap.add_argument("--models-dir", dest="target_dir", required=True, help=where)
    an = sub.add_parser("analyze", help="how alike two models are: cosine and L2 per key and block, attention")
    an.add_argument("a")
    an.add_argument("b")
    an.add_argument("--csv", help="every key: block,key,shape,cosine,rel_l2,attention_sim")
    an.add_argument("--heatmap", help="a PNG of blocks × metrics")
    an.add_argument("--chart", help="a PNG of bars per block: 100 - cosine mean, in %%")
    an.add_argument("--attention", action="store_true", help="also the attention similarity of every attention module")
    an.add_argument("--overwrite", action="store_true")
    bd = sub.add_parser("build", help="a full checkpoint from one file per component")
    bd.add_argument("--arch", required=True, help="sd1, sd2, sdxl, flux, …")
    bd.add_argument("--component", action="append", required=True, metavar="NAME=FILE",
                    help="e.g. unet=unet.safetensors; repeat for every component")  # fmt: skip
    bd.add_argument("-o", "--output", required=True)
    bd.add_argument("--overwrite", action="store_true")
