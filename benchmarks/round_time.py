"""Time one I-BAU round against one plain fine-tuning epoch, side by side in one run.

Setting (issue 2): 5,000 clean CIFAR-10 test images, batch 100, small VGG. With --model (a BadNets model
from benchmarks/make_cifar_badnets.py) it also reports held-out ACC/ASR after the round, so a speed-up
that loses the effect shows.

    python benchmarks/round_time.py --npz ../shared/data/cifar10.npz --model runs/cifar_badnets/model.safetensors

Configurations are NAME=preset[,key=value...] as in compare_presets.py. The fine-tuning epoch is timed
before and after the I-BAU rounds; ratios use their mean. On a GPU (``--device cuda``, the default where
one is present) each row also prints clean images per second and the peak GPU memory, e.g. issue 20's
precision options side by side:

    python benchmarks/round_time.py --npz ../shared/data/cifar10.npz --model M --device cuda \
        default=default bf16=default,precision=bfloat16 cl=default,channels_last=true \
        bf16cl=default,precision=bfloat16,channels_last=true
"""
from __future__ import annotations

import argparse
import copy
import json
import sys
import time
from pathlib import Path

import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).parent))
from compare_presets import parse_config  # noqa: E402
from ibau import unlearn  # noqa: E402
from ibau.attacks import BadNets  # noqa: E402
from ibau.data import defender_split, load_npz  # noqa: E402
from ibau.metrics import evaluate  # noqa: E402
from ibau.models import build_model, load_model  # noqa: E402
from ibau.training import iterate_batches  # noqa: E402
from ibau.utils import environment  # noqa: E402

DEFAULT = ["reference=reference", "default=default"]


def finetune_epoch(model, clean, batch_size=100, flush_denormal=True, device="cpu", fast=False) -> float:
    """One Adam epoch over the clean set, under the same subnormal-float setting as I-BAU's default;
    ``fast``: in bfloat16 autocast with channels-last weights and images, as I-BAU's speed options."""
    torch.set_flush_denormal(flush_denormal)
    net = copy.deepcopy(model).train()
    layout = torch.channels_last if fast else torch.contiguous_format
    net.to(memory_format=layout)
    opt = torch.optim.Adam(net.parameters(), lr=1e-3)
    _sync(device)
    t0 = time.perf_counter()
    for x, y in iterate_batches(clean.images, clean.labels, batch_size, torch.Generator().manual_seed(0)):
        with torch.autocast(torch.device(device).type, dtype=torch.bfloat16, enabled=fast):
            loss = F.cross_entropy(net(x.to(device).contiguous(memory_format=layout)), y.to(device))
        opt.zero_grad()
        loss.backward()
        opt.step()
    _sync(device)
    seconds = time.perf_counter() - t0
    torch.set_flush_denormal(False)
    return seconds


def _sync(device) -> None:
    if torch.device(device).type == "cuda":
        torch.cuda.synchronize(device)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--npz", required=True)
    ap.add_argument("--model", help="BadNets model (safetensors + card); default: an untrained --arch")
    ap.add_argument("--arch", default="small_vgg",
                    help="the untrained architecture timed without --model (default small_vgg; e.g. preact_resnet18): "
                         "a round's cost hardly depends on the weights, its effect is not scored")
    ap.add_argument("--trigger", help="the model's trigger.json, for ACC/ASR after the round (default: BadNets → 8)")
    ap.add_argument("--clean-size", type=int, default=5000)
    ap.add_argument("--out", help="write the measurements as JSON here")
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu",
                    help="cpu or cuda[:N] (default: cuda where present)")
    ap.add_argument("--bf16-epoch", action=argparse.BooleanOptionalAction, default=None,
                    help="also time a bfloat16 channels-last fine-tuning epoch (default: on CUDA only; a CPU "
                         "without native bfloat16 emulates it, about 10x slower here)")
    ap.add_argument("configs", nargs="*", default=DEFAULT)
    args = ap.parse_args()

    _, test = load_npz(args.npz, train_limit=1)
    clean, held = defender_split(test, args.clean_size, seed=0)
    if args.model:
        model, card = load_model(args.model)
    else:
        torch.manual_seed(0)  # the untrained weights, so two runs time the same network
        model, card = build_model(args.arch, num_classes=10).eval(), None
    model = model.to(args.device)
    classes = card.num_classes if card is not None else 10
    gpu = torch.device(args.device).type == "cuda"
    trigger = BadNets(target=8)
    if args.trigger:
        from ibau.attacks.io import load_trigger
        trigger = load_trigger(args.trigger)
    plain = finetune_epoch(model, clean, flush_denormal=False, device=args.device)
    rows, ft = [], [finetune_epoch(model, clean, device=args.device)]
    bf16 = gpu if args.bf16_epoch is None else args.bf16_epoch
    ft_fast = [finetune_epoch(model, clean, device=args.device, fast=True)] if bf16 else []
    print(f"fine-tuning epoch: {ft[0]:.1f}s (without flushing subnormals: {plain:.1f}s) on {args.device}", flush=True)
    for spec in args.configs:
        name, cfg = parse_config(spec if "=" in spec else f"{spec}={spec}",
                                 {"rounds": 1, "batch_size": 100, "device": args.device})
        if gpu:
            torch.cuda.reset_peak_memory_stats(args.device)
        res = unlearn(model, clean, cfg, progress=False)
        gpu_fields = {"peak_gpu_mib": torch.cuda.max_memory_allocated(args.device) / 2**20} if gpu else {}
        m = evaluate(res.model, held.images, held.labels, trigger, classes) if args.model else {}
        rows.append({"name": name, "seconds": res.seconds, "inner_seconds": res.history[0].inner_seconds,
                     "images_per_s": len(clean) / res.seconds, **gpu_fields, **m, "config": cfg.to_dict()})
        scores = f"  ACC {100 * m['acc']:.2f} ASR {100 * m['asr']:.2f}" if m else ""
        memory = f", peak {gpu_fields['peak_gpu_mib']:.0f} MiB" if gpu else ""
        print(f"{name}: {res.seconds:.1f}s (δ search {res.history[0].inner_seconds:.1f}s{memory}){scores}", flush=True)
    ft.append(finetune_epoch(model, clean, device=args.device))
    if bf16:
        ft_fast.append(finetune_epoch(model, clean, device=args.device, fast=True))
    ft_mean = sum(ft) / len(ft)
    fast_mean = sum(ft_fast) / len(ft_fast) if ft_fast else float("nan")
    before = evaluate(model, held.images, held.labels, trigger, classes) if args.model else None
    print(f"\nfine-tuning epoch: {ft[0]:.1f}s before, {ft[1]:.1f}s after (mean {ft_mean:.1f}s); in bfloat16 "
          + (f"channels-last: {ft_fast[0]:.1f}s, {ft_fast[1]:.1f}s (mean {fast_mean:.1f}s)" if ft_fast else "channels-last: not timed"))
    if before:
        print(f"before I-BAU: ACC {100 * before['acc']:.2f} ASR {100 * before['asr']:.2f}")
    print(f"{'config':>16} {'round s':>8} {'x FT epoch':>10} {'x bf16 FT':>10} {'images/s':>9} {'ACC %':>7} {'ASR %':>7}"
          + (f" {'peak MiB':>9}" if gpu else ""))
    for r in rows:
        acc = f"{100 * r['acc']:7.2f}" if "acc" in r else "      –"
        asr = f"{100 * r['asr']:7.2f}" if "asr" in r else "      –"
        memory = f" {r['peak_gpu_mib']:9.0f}" if gpu else ""
        print(f"{r['name']:>16} {r['seconds']:8.1f} {r['seconds'] / ft_mean:10.2f} {r['seconds'] / fast_mean:10.2f} "
              f"{r['images_per_s']:9.0f} {acc} {asr}"
              + memory)
    if args.out:
        Path(args.out).write_text(json.dumps({"finetune_epoch": ft, "finetune_epoch_bf16_channels_last": ft_fast,
                                              "before": before, "rows": rows, "device": args.device,
                                              "model": args.model or f"untrained {args.arch}",
                                              "env": environment()}, indent=2))


if __name__ == "__main__":
    main()
