"""Train a poisoned model: what ``ibau attack`` adapts. Resumable from the last finished epoch."""
from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any, Callable

import torch

from .attacks import poison
from .attacks.base import Trigger
from .data import ImageSet, load_dataset
from .metrics import DEFINITIONS, evaluate
from .models import ModelCard, build_model, save_model
from .report import write_json
from .training import train_classifier
from .utils import environment, resolve_device, seed_everything

CHECKPOINT = "checkpoint.pt"


def channel_stats(images: torch.Tensor) -> tuple[list[float], list[float]]:
    """Per-channel mean and std of a training set (the model's normalisation layer)."""
    return images.mean((0, 2, 3)).tolist(), images.std((0, 2, 3)).clamp_min(1e-3).tolist()


def save_trigger_png(trigger: Trigger, shape: tuple[int, int, int], path: Path) -> Path:
    """The trigger stamped on a black image, as a PNG."""
    from PIL import Image

    img = trigger.apply(torch.zeros(1, *shape))[0]
    arr = (img.permute(1, 2, 0).clamp(0, 1) * 255).round().to(torch.uint8).numpy()
    Image.fromarray(arr if arr.shape[2] == 3 else arr[:, :, 0]).save(path)
    return path


def train_poisoned(dataset: str, trigger: Trigger, out: str | Path, data_dir: str | None = None,
                   download: bool = False, poison_ratio: float = 0.2, epochs: int = 50, arch: str = "small_vgg",
                   train_limit: int | None = None, batch_size: int = 128, lr: float = 1e-3, seed: int = 0,
                   device: str | None = None, resume: bool = False, progress: bool = True,
                   log: Callable[[str], None] = print) -> dict[str, Any]:
    """Poison ``dataset``'s training split with ``trigger``, train ``arch`` on it, and write ``out/``:
    ``model.safetensors`` + card (attack spec, poisoned indices, ACC/ASR/RA on the test split),
    ``trigger.png``, ``trigger.json``, ``train.log`` and, while training, ``checkpoint.pt``.

    With ``resume=True`` an interrupted run continues from its last finished epoch (same result as an
    uninterrupted one on CPU).
    """
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    dev = resolve_device(device)
    seed_everything(seed)
    train, test = load_dataset(dataset, data_dir=data_dir, download=download, train_limit=train_limit)
    num_classes = int(max(train.labels.max(), test.labels.max())) + 1
    poisoned = poison(train.images, train.labels, trigger, poison_ratio, num_classes=num_classes, seed=seed)
    mean, std = channel_stats(train.images)
    c, h, w = train.shape
    model = build_model(arch, num_classes=num_classes, in_channels=c, input_size=h, mean=mean, std=std)
    state = None
    ckpt = out / CHECKPOINT
    if resume and ckpt.exists():
        saved = torch.load(ckpt, map_location="cpu", weights_only=True)  # our own file, still never unpickled
        model.load_state_dict(saved["model"])
        state = saved["train"]
        log(f"resuming from epoch {state['epoch']} of {epochs}")
    elif resume:
        log(f"no checkpoint in {out}; starting from scratch")
    log_file = (out / "train.log").open("a")
    t0 = time.perf_counter()

    def on_epoch(epoch: int, loss: float, train_state: dict) -> None:
        torch.save({"model": model.state_dict(), "train": train_state}, ckpt.with_suffix(".tmp"))
        ckpt.with_suffix(".tmp").replace(ckpt)  # atomic: a kill never leaves half a checkpoint
        line = f"epoch {epoch + 1}/{epochs} loss {loss:.4f} ({time.perf_counter() - t0:.0f}s)"
        log_file.write(line + "\n")
        log_file.flush()

    log(f"training {arch} on {len(train)} {dataset} images, {len(poisoned.indices)} poisoned with {trigger!r}")
    try:
        train_classifier(model, ImageSet(poisoned.images, poisoned.labels), epochs=epochs, lr=lr,
                         batch_size=batch_size, seed=seed, device=str(dev), progress=progress,
                         desc=f"train ({trigger.name})", on_epoch=on_epoch, resume=state)
    finally:
        log_file.close()
    metrics = evaluate(model, test.images, test.labels, trigger, num_classes)
    log("test split: " + "  ".join(f"{k.upper()} {100 * v:.2f}%" for k, v in metrics.items()))
    spec = trigger.spec()
    card = ModelCard(arch, num_classes, [c, h, w], {"mean": mean, "std": std}, metadata={
        "attack": spec, "poison_ratio": poison_ratio, "poisoned_indices": poisoned.indices.tolist(),
        "dataset": dataset, "train_size": len(train), "epochs": epochs, "seed": seed, "test": metrics,
        "definitions": DEFINITIONS, "environment": environment(),
    })
    save_model(model.cpu(), out / "model.safetensors", card)
    save_trigger_png(trigger, (c, h, w), out / "trigger.png")
    (out / "trigger.json").write_text(json.dumps(spec, indent=2) + "\n")
    record = {"dataset": dataset, "attack": spec, "poison_ratio": poison_ratio, "epochs": epochs, "seed": seed,
              "test": metrics, "seconds": time.perf_counter() - t0}
    write_json(out / "metrics.json", record)
    ckpt.unlink(missing_ok=True)
    return record
