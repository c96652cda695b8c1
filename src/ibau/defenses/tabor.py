"""TABOR: Neural Cleanse with regularisers against false triggers.

Guo et al., "TABOR: A Highly Accurate Approach to Inspecting and Restoring Trojan Backdoors in AI
Systems", 2019, https://arxiv.org/abs/1908.01763. Detection, flagging and unlearning are Neural Cleanse's
(:mod:`ibau.defenses.neural_cleanse`); only the reverse-engineering objective gains TABOR's terms, passed
to :func:`~ibau.defenses.neural_cleanse.reverse_engineer` as its ``extra`` regulariser.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from .config import setting
from .neural_cleanse import NeuralCleanse, NeuralCleanseConfig, Regulariser

_DROP = "use 0 to drop the term"


def smoothness(t: torch.Tensor) -> torch.Tensor:
    """Sum of squared differences between vertically and horizontally adjacent pixels of a C×H×W tensor
    (the smoothness term s(·) of TABOR's R2, squared as in the public TABOR implementations).

    >>> float(smoothness(torch.tensor([[[0.0, 1.0], [0.0, 1.0]]])))
    2.0
    """
    return (t[:, 1:, :] - t[:, :-1, :]).square().sum() + (t[:, :, 1:] - t[:, :, :-1]).square().sum()


def _elastic(t: torch.Tensor) -> torch.Tensor:
    return t.abs().sum() + t.square().sum()


def tabor_regulariser(mask_elastic: float = 1e-4, pattern_elastic: float = 1e-4, mask_smooth: float = 1e-3,
                      pattern_smooth: float = 1e-4, blocking: float = 0.1, overlaying: float = 1e-2) -> Regulariser:
    """TABOR's R1–R4 as an ``extra`` term for :func:`~ibau.defenses.neural_cleanse.reverse_engineer`.

    With ``m`` the mask, ``p`` the pattern and ``m' = 1 − m``:
    R1 (overly large triggers) = ``mask_elastic·(‖m‖₁ + ‖m‖₂²) + pattern_elastic·(‖m'⊙p‖₁ + ‖m'⊙p‖₂²)``;
    R2 (scattered triggers) = ``mask_smooth·s(m) + pattern_smooth·s(m'⊙p)``, ``s`` = :func:`smoothness`;
    R3 (blocking triggers) = ``blocking·CE(f(m'⊙x), y_true)``: what the trigger leaves of the image must
    still be classified correctly; R4 (overlaying triggers) = ``overlaying·CE(f(m⊙p), target)``: the trigger
    alone must carry the target.
    """

    def extra(model: nn.Module, x: torch.Tensor, y: torch.Tensor | None, mask: torch.Tensor,
              pattern: torch.Tensor, target: int) -> torch.Tensor:
        outside = (1 - mask) * pattern
        loss = mask_elastic * _elastic(mask) + pattern_elastic * _elastic(outside)
        loss = loss + mask_smooth * smoothness(mask) + pattern_smooth * smoothness(outside)
        if blocking:
            if y is None:
                raise ValueError("TABOR's blocking term needs the clean images' labels; pass labels= or set blocking=0")
            loss = loss + blocking * F.cross_entropy(model((1 - mask) * x), y)
        if overlaying:
            alone = (mask * pattern).unsqueeze(0)
            loss = loss + overlaying * F.cross_entropy(model(alone), torch.tensor([target], device=alone.device))
        return loss

    return extra


@dataclass(frozen=True)
class TABORConfig(NeuralCleanseConfig):
    """Settings of :class:`TABOR`: Neural Cleanse's plus the regulariser weights (documented there)."""

    mask_elastic: float = setting(1e-4, ge=0, hint=_DROP)
    pattern_elastic: float = setting(1e-4, ge=0, hint=_DROP)
    mask_smooth: float = setting(1e-3, ge=0, hint=_DROP)
    pattern_smooth: float = setting(1e-4, ge=0, hint=_DROP)
    blocking: float = setting(0.1, ge=0, hint=_DROP)
    overlaying: float = setting(1e-2, ge=0, hint=_DROP)


class TABOR(NeuralCleanse):
    """TABOR (Guo et al., 2019, https://arxiv.org/abs/1908.01763): Neural Cleanse whose trigger
    reverse-engineering also penalises overly large, scattered, blocking and overlaying triggers
    (:func:`tabor_regulariser`); flagging (MAD anomaly index of the mask ℓ1 norms) and unlearning are
    Neural Cleanse's. Checkpoints: ``"detect"``, then ``"unlearn epoch k"``.

    Args: every :class:`~ibau.defenses.neural_cleanse.NeuralCleanse` argument with the same default
    (steps=31000, batch_size=32, lr=0.1, init_cost=1e-3, cost_multiplier=2.0, success_threshold=0.99,
    patience=5, epoch_steps=31, early_stop_patience=25, detect_images=None, anomaly_threshold=2.0, unlearn_fraction=0.2, unlearn_epochs=2,
    unlearn_lr=1e-3, unlearn_batch_size=64, seed=0, device=None), and the weights of TABOR's terms, for
    images in [0, 1] (the adaptive NC weight λ on ‖m‖₁ stays in the objective):

        mask_elastic: R1, ‖m‖₁ + ‖m‖₂² (default 1e-4).
        pattern_elastic: R1, ‖(1−m)⊙p‖₁ + ‖(1−m)⊙p‖₂², the pattern outside the mask (default 1e-4).
        mask_smooth: R2, squared total variation of m (default 1e-3).
        pattern_smooth: R2, squared total variation of (1−m)⊙p (default 1e-4).
        blocking: R3, cross-entropy of the trigger-free part (1−m)⊙x against the true labels (default 0.1).
        overlaying: R4, cross-entropy of the trigger alone m⊙p against the target (default 1e-2).

    >>> TABOR(steps=50, blocking=0.05)
    TABOR(seed=0, device=None, steps=50, batch_size=32, lr=0.1, init_cost=0.001, cost_multiplier=2.0, success_threshold=0.99, \
patience=5, epoch_steps=31, early_stop_patience=25, detect_images=None, anomaly_threshold=2.0, unlearn_fraction=0.2, unlearn_epochs=2, unlearn_lr=0.001, \
unlearn_batch_size=64, mask_elastic=0.0001, pattern_elastic=0.0001, mask_smooth=0.001, \
pattern_smooth=0.0001, blocking=0.05, overlaying=0.01)
    """

    name = "tabor"
    label = "TABOR"
    config_class = TABORConfig

    def regulariser(self) -> Regulariser:
        c = self.config
        return tabor_regulariser(c.mask_elastic, c.pattern_elastic, c.mask_smooth, c.pattern_smooth,
                                 c.blocking, c.overlaying)
