"""How the HT victim's fine-tune set size sets the hidden-trigger attack's strength (issue 6).

HT's default victim (``finetune="last"``) trains only the last linear layer of the reference model, whose
other layers stay frozen in eval mode, so its penultimate features are fixed: this script computes them
once, then, for each ``finetune_size`` (clean images per class besides the poisons; 0 = the whole
poisoned training set), trains a fresh copy of the last layer as ``ibau attack`` would (Adam, the run's
lr, batch size and epochs, seeded) on the rows :meth:`HiddenTrigger.victim_rows` picks, puts it back
into the model and measures ACC/ASR with :func:`ibau.metrics.evaluate` on the whole test split. The
poisons are those an ``ibau attack --attack ht`` run saved (``poisons.safetensors``).

    python benchmarks/ht_finetune_size.py --npz ../shared/data/cifar10.npz \\
        --run runs/bench/models/train-ht-r0.2-s0-5ecb17ff \\
        --reference runs/cifar_attacks/clean/model.safetensors --sizes 0 100 250 500 1000
"""
from __future__ import annotations

import argparse
import copy
import time
from pathlib import Path

import torch
from safetensors.torch import load_file

from ibau.attacks.hidden import _last_linear, features
from ibau.attacks.io import load_trigger
from ibau.data.npz import load_npz
from ibau.metrics import evaluate
from ibau.models import load_model
from ibau.models.io import read_card


def penultimate(net: torch.nn.Module, images: torch.Tensor, batch: int = 500) -> torch.Tensor:
    with torch.no_grad():
        return torch.cat([features(net, images[i:i + batch]) for i in range(0, len(images), batch)])


def fit_last_layer(head: torch.nn.Linear, feats: torch.Tensor, labels: torch.Tensor, epochs: int, lr: float,
                   batch_size: int, seed: int) -> torch.nn.Linear:
    head = copy.deepcopy(head)
    gen = torch.Generator().manual_seed(seed)
    opt = torch.optim.Adam(head.parameters(), lr=lr)
    for _ in range(epochs):
        order = torch.randperm(len(feats), generator=gen)
        for i in range(0, len(feats), batch_size):
            rows = order[i:i + batch_size]
            loss = torch.nn.functional.cross_entropy(head(feats[rows]), labels[rows])
            opt.zero_grad()
            loss.backward()
            opt.step()
    return head


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--npz", required=True)
    ap.add_argument("--run", type=Path, required=True, help="an `ibau attack --attack ht` output folder")
    ap.add_argument("--reference", type=Path, required=True, help="the clean model the poisons were crafted on")
    ap.add_argument("--sizes", type=int, nargs="+", default=[0, 100, 250, 500, 1000])
    args = ap.parse_args()
    card = read_card(args.run / "model.safetensors")
    meta, training = card.metadata, card.metadata["training"]
    trigger = load_trigger(args.run / "trigger.json")
    if trigger.finetune != "last":
        raise SystemExit(f"this sweep models the finetune='last' victim; {args.run} used finetune={trigger.finetune!r}")
    ref, _ = load_model(args.reference)
    ref.eval()
    train, test = load_npz(args.npz, train_limit=meta["train_size"])
    saved = load_file(str(args.run / "poisons.safetensors"))
    images, labels = train.images.clone(), train.labels
    images[saved["indices"]] = saved["images"]
    t0 = time.perf_counter()
    feats = penultimate(ref, images)
    print(f"features of {len(images)} training images in {time.perf_counter() - t0:.0f}s; "
          f"{len(saved['indices'])} poisons, source {trigger.source} -> target {trigger.target}")
    print("| finetune_size (clean per class) | victim's training images | test ACC % | test ASR % |")
    print("|---:|---:|---:|---:|")
    for size in args.sizes:
        trigger.finetune_size = size
        rows = trigger.victim_rows(labels, saved["indices"], meta["seed"])
        rows = torch.arange(len(labels)) if rows is None else rows
        head = fit_last_layer(_last_linear(ref), feats[rows], labels[rows], meta["epochs"], training["lr"],
                              training["batch_size"], meta["seed"])
        victim = copy.deepcopy(ref)
        _last_linear(victim).load_state_dict(head.state_dict())
        m = evaluate(victim, test.images, test.labels, trigger, card.num_classes)
        print(f"| {size or 'all'} | {len(rows)} | {100 * m['acc']:.2f} | {100 * m['asr']:.2f} |", flush=True)


if __name__ == "__main__":
    main()
