"""Plain fine-tuning on the clean set: the floor every backdoor defense should beat (SPEC §3)."""
from __future__ import annotations

from dataclasses import dataclass

from torch import nn

from ..data.arrays import ImageSet
from ..training import train_classifier
from .base import Defense, DefenseResult


@dataclass(frozen=True)
class FineTuneConfig:
    """Args: epochs (default 10), lr: Adam learning rate (default 1e-4), batch_size (default 128),
    seed (default 0), device (default: CUDA if available)."""

    epochs: int = 10
    lr: float = 1e-4
    batch_size: int = 128
    seed: int = 0
    device: str | None = None

    def __post_init__(self):
        if self.epochs < 1 or self.lr <= 0 or self.batch_size < 1:
            raise ValueError(f"finetune needs epochs >= 1, lr > 0, batch_size >= 1; got {self}")


def fit(defense: Defense, model: nn.Module, data: ImageSet, epochs: int, lr: float, batch_size: int, seed: int,
        progress: bool, desc: str, step_prefix: str = "epoch") -> nn.Module:
    """Fine-tune with Adam + cross-entropy, reporting a checkpoint after every epoch."""
    return train_classifier(model, data, epochs=epochs, lr=lr, batch_size=batch_size, seed=seed,
                            device=str(defense._device), progress=progress, desc=desc,
                            on_epoch=lambda epoch, loss, state: defense.checkpoint(model, f"{step_prefix} {epoch + 1}"))


class FineTune(Defense):
    """Fine-tune all weights on the clean set with Adam and cross-entropy; checkpoints after each epoch.

    >>> FineTune(epochs=2)
    FineTune(epochs=2, lr=0.0001, batch_size=128, seed=0, device=None)
    """

    name = "finetune"
    config_class = FineTuneConfig

    def _run(self, model: nn.Module, clean: ImageSet, progress: bool) -> DefenseResult:
        c = self.config
        fit(self, model, clean, c.epochs, c.lr, c.batch_size, c.seed, progress, "finetune")
        return DefenseResult(model=model)
