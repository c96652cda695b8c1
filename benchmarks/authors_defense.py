"""One defense on the I-BAU authors' CIFAR-10 BadNets checkpoint, on their split, held-out ACC/ASR at every
checkpoint of the defense (a development check of a baseline's settings; docs/baselines.md).

Their split: the defender's clean set is test[:5000], the held-out images test[5000:]; the trigger is BadNets →
8. Options go to the defense as ``--set KEY=VALUE`` (parsed as ``--defense-option``). Prints one line per
checkpoint and the defense's per-round records where it has them (SAU's ``per_round``); ``--out`` writes them.

    python benchmarks/authors_defense.py --npz ../shared/data/cifar10.npz --model ../shared/models/badnets_8_02_ckpt.pth \\
        --method ft_sam --set epochs=20 lr_schedule=cosine same_dropout=false
"""
from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import torch

from ibau.attacks import BadNets, parse_options
from ibau.data import ImageSet, load_npz
from ibau.defenses import make_defense
from ibau.metrics import evaluate
from ibau.models import ModelCard, load_model


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--npz", required=True)
    ap.add_argument("--model", required=True, help="the authors' checkpoint (badnets_8_02_ckpt.pth)")
    ap.add_argument("--method", required=True)
    ap.add_argument("--set", nargs="*", default=[], help="KEY=VALUE options of the defense")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--out", help="write the checkpoints and per-round records here as JSON")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    _, test = load_npz(args.npz, train_limit=1)
    model, _ = load_model(args.model, ModelCard("small_vgg", 10, [3, 32, 32]))
    clean = ImageSet(test.images[:5000], test.labels[:5000])
    held = ImageSet(test.images[5000:], test.labels[5000:])
    trigger = BadNets(target=8)
    before = evaluate(model, held.images, held.labels, trigger, 10)
    print(f"before: ACC {100 * before['acc']:.2f} ASR {100 * before['asr']:.2f}", flush=True)
    options = parse_options(args.set)

    def score(net, seconds):
        m = evaluate(net, held.images, held.labels, trigger, 10)
        print(f"{seconds:8.1f} s  ACC {100 * m['acc']:.2f} ASR {100 * m['asr']:.2f}", flush=True)
        return m

    start = time.time()
    result = make_defense(args.method, device="cpu", **options).run(model, clean, callback=score, progress=False)
    print(f"{args.method} {options}: {time.time() - start:.0f} s wall", flush=True)
    per_round = result.extra.get("per_round", [])
    for r in per_round:
        print({k: round(v, 4) if isinstance(v, float) else v for k, v in r.items()}, flush=True)
    if args.out:
        out = {"method": args.method, "options": options, "before": before, "history": result.history,
               "per_round": per_round, "threads": args.threads,
               "metrics": "ACC/ASR on test[5000:] (SPEC §4); the defense's own records"}
        Path(args.out).write_text(json.dumps(out, indent=1, default=str) + "\n")


if __name__ == "__main__":
    main()
