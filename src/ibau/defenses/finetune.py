"""Plain fine-tuning on the clean set: the floor every backdoor defense should beat (SPEC §3)."""
from __future__ import annotations

from dataclasses import dataclass

from torch import nn

from ..data.arrays import ImageSet
from ..training import train_classifier
from .base import Defense, DefenseResult
from .config import DefenseConfig, setting


@dataclass(frozen=True)
class FineTuneConfig(DefenseConfig):
    """Args: epochs (default 10), lr: Adam learning rate (default 1e-4), batch_size (default 128),
    seed (default 0), device (default: CUDA if available)."""

    epochs: int = setting(10, ge=1)
    lr: float = setting(1e-4, gt=0, hint="e.g. 1e-4")
    batch_size: int = setting(128, ge=1)


def fit(defense: Defense, model: nn.Module, data: ImageSet, epochs: int, lr: float, batch_size: int, seed: int,
        progress: bool, desc: str, step_prefix: str = "epoch") -> nn.Module:
    """Fine-tune with Adam + cross-entropy, reporting a checkpoint after every epoch."""
    return train_classifier(model, data, epochs=epochs, lr=lr, batch_size=batch_size, seed=seed,
                            device=str(defense._device), progress=progress, desc=desc,
                            on_epoch=lambda epoch, loss, state: defense.checkpoint(model, f"{step_prefix} {epoch + 1}"))


class FineTune(Defense):
    """Fine-tune all weights on the clean set with Adam and cross-entropy; checkpoints after each epoch.

    >>> FineTune(epochs=2)
    FineTune(seed=0, device=None, epochs=2, lr=0.0001, batch_size=128)
    """

    name = "finetune"
    config_class = FineTuneConfig

    def _run(self, model: nn.Module, clean: ImageSet, progress: bool) -> DefenseResult:
        c = self.config
        fit(self, model, clean, c.epochs, c.lr, c.batch_size, c.seed, progress, "finetune")
        return DefenseResult(model=model)
