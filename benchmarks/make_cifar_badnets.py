"""Train a BadNets-poisoned small VGG on CIFAR-10 from an npz file (CPU-budget recipe).

Used by benchmarks/round_time.py and the preset comparison. Example (about 20 minutes on 2 cores):

    python benchmarks/make_cifar_badnets.py --npz ../shared/data/cifar10.npz --out runs/cifar_badnets
"""
from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

from ibau.attacks import BadNets, poison
from ibau.data import ImageSet, defender_split, load_npz
from ibau.metrics import evaluate
from ibau.models import ModelCard, save_model, small_vgg
from ibau.training import train_classifier
from ibau.utils import environment, seed_everything

CIFAR_MEAN, CIFAR_STD = (0.4914, 0.4822, 0.4465), (0.2470, 0.2435, 0.2616)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--npz", required=True)
    ap.add_argument("--out", default="runs/cifar_badnets")
    ap.add_argument("--train-size", type=int, default=20000)
    ap.add_argument("--epochs", type=int, default=15)
    ap.add_argument("--ratio", type=float, default=0.2)
    ap.add_argument("--target", type=int, default=8)
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()

    seed_everything(args.seed)
    train, test = load_npz(args.npz, train_limit=args.train_size)
    trigger = BadNets(target=args.target)
    poisoned = poison(train.images, train.labels, trigger, args.ratio, num_classes=10, seed=args.seed)
    model = small_vgg(10, mean=CIFAR_MEAN, std=CIFAR_STD)
    t0 = time.time()
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)

    _, held_out = defender_split(test, 5000, seed=args.seed)

    def log(epoch, loss, state):
        m = evaluate(model, held_out.images, held_out.labels, trigger, 10)
        model.train()
        print(f"epoch {epoch + 1}/{args.epochs} loss {loss:.3f} acc {m['acc']:.4f} asr {m['asr']:.4f} "
              f"({time.time() - t0:.0f}s)", flush=True)

    train_classifier(model, ImageSet(poisoned.images, poisoned.labels), epochs=args.epochs, lr=1e-3,
                     batch_size=128, seed=args.seed, device="cpu", progress=False, on_epoch=log)
    metrics = evaluate(model, held_out.images, held_out.labels, trigger, 10)
    card = ModelCard("small_vgg", 10, [3, 32, 32], {"mean": list(CIFAR_MEAN), "std": list(CIFAR_STD)},
                     metadata={"attack": repr(trigger), "poison_ratio": args.ratio, "train_size": args.train_size,
                               "epochs": args.epochs, "seed": args.seed, "held_out": metrics,
                               "seconds": time.time() - t0, "env": environment()})
    save_model(model, out / "model.safetensors", card)
    (out / "metrics.json").write_text(json.dumps(metrics, indent=2))
    print("saved", out / "model.safetensors", metrics)


if __name__ == "__main__":
    main()
