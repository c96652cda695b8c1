"""ℓ0- and ℓ2-invisible triggers: perturbations optimised under a norm budget.

Li et al., "Invisible Backdoor Attacks on Deep Neural Networks via Steganography and Regularization",
IEEE TDSC 2021, https://arxiv.org/abs/1909.02742. The trigger is optimised to excite chosen neurons of
a reference model (TrojanNN's objective, see :mod:`ibau.attacks.excite`) while its ℓ0 or ℓ2 norm stays
within a budget, so it is hard to see but easy for the poisoned model to learn. The I-BAU authors' ℓ0
trigger touches 8 pixels (in the last row); their ℓ2 trigger has ℓ2 ≈ 3.2 and max ≈ 0.27.
"""
from __future__ import annotations

import torch

from .base import StoredPerturbation
from .excite import excite


class L0Invisible(StoredPerturbation):
    """Sparse trigger: at most ``pixels`` pixel locations are changed (all channels of each).

    Args:
        delta: the generated perturbation (C×H×W); build it with :meth:`generate`.
        target: target class (default 0, the paper's); all_to_all: y → (y + 1) mod C.

    ``generate(model, images, seed=0, pixels=8, region="any", steps=200, lr=0.05, neurons=2)`` runs
    projected Adam ascent where the projection keeps the ``pixels`` locations with the largest
    perturbation (iterative hard thresholding); ``region="last_row"`` restricts them to the bottom row
    as in the authors' trigger.

    >>> from ibau.models import small_vgg
    >>> trig = L0Invisible.generate(small_vgg(10), torch.rand(8, 3, 32, 32), steps=5)
    >>> int((trig.delta.abs().sum(0) > 0).sum()) <= 8
    True
    """

    name = "l0_inv"

    def __init__(self, delta=None, target: int | None = 0, all_to_all: bool = False):
        super().__init__(delta=delta, target=target, all_to_all=all_to_all)

    @classmethod
    def generate(cls, model=None, images=None, seed: int = 0, pixels: int = 8, region: str = "any",
                 steps: int = 200, lr: float = 0.05, neurons: int = 2, **kwargs) -> L0Invisible:
        _need_reference(cls, model, images)
        c, h, w = images.shape[1:]
        if region not in ("any", "last_row"):
            raise ValueError(f"l0_inv region must be 'any' or 'last_row', got {region!r}")
        allowed = torch.zeros(h, w)
        if region == "any":
            allowed[:] = 1
        else:
            allowed[-1] = 1
        if not 1 <= pixels <= int(allowed.sum()):
            raise ValueError(f"l0_inv pixels must be between 1 and {int(allowed.sum())} for region {region!r}, got {pixels}")

        def project(d: torch.Tensor) -> torch.Tensor:
            d = d.clamp(-1, 1) * allowed.to(d.device)
            keep = d.norm(dim=0).flatten().topk(pixels).indices
            support = torch.zeros(h * w, device=d.device)
            support[keep] = 1
            return d * support.view(1, h, w)

        init = 0.01 * torch.randn(c, h, w, generator=torch.Generator().manual_seed(seed))
        delta = excite(model, images, project(init), lambda x, d: (x + d).clamp(0, 1), project,
                       neurons=neurons, steps=steps, lr=lr, seed=seed)
        return cls(delta=delta, **kwargs)


class L2Invisible(StoredPerturbation):
    """Full-image low-amplitude trigger with ‖δ‖₂ ≤ ``budget`` and |δ| ≤ ``max_value`` everywhere.

    Args:
        delta: the generated perturbation (C×H×W); build it with :meth:`generate`.
        target: target class (default 0, the paper's); all_to_all: y → (y + 1) mod C.

    ``generate(model, images, seed=0, budget=3.2, max_value=0.27, steps=200, lr=0.01, neurons=2)``
    runs projected Adam ascent; the projection clips to ±max_value then scales into the ℓ2 ball.

    >>> from ibau.models import small_vgg
    >>> trig = L2Invisible.generate(small_vgg(10), torch.rand(8, 3, 32, 32), steps=5)
    >>> float(trig.delta.norm()) <= 3.2 + 1e-3
    True
    """

    name = "l2_inv"

    def __init__(self, delta=None, target: int | None = 0, all_to_all: bool = False):
        super().__init__(delta=delta, target=target, all_to_all=all_to_all)

    @classmethod
    def generate(cls, model=None, images=None, seed: int = 0, budget: float = 3.2, max_value: float = 0.27,
                 steps: int = 200, lr: float = 0.01, neurons: int = 2, **kwargs) -> L2Invisible:
        _need_reference(cls, model, images)
        if budget <= 0 or not 0 < max_value <= 1:
            raise ValueError(f"l2_inv needs budget > 0 and max_value in (0, 1], got {budget}, {max_value}")
        # Quantising to 1e-4 may nudge the norm up by at most sqrt(n)·5e-5; aim just inside the ball.
        radius = budget - 5e-5 * images[0].numel() ** 0.5

        def project(d: torch.Tensor) -> torch.Tensor:
            d = d.clamp(-max_value, max_value)
            n = d.norm()
            return d * (radius / n) if n > radius else d

        init = 0.01 * torch.randn(images.shape[1:], generator=torch.Generator().manual_seed(seed))
        delta = excite(model, images, project(init), lambda x, d: (x + d).clamp(0, 1), project,
                       neurons=neurons, steps=steps, lr=lr, seed=seed)
        return cls(delta=delta, **kwargs)


def _need_reference(cls, model, images) -> None:
    if model is None or images is None:
        raise ValueError(f"{cls.name} is optimised against a reference model: pass model and images to "
                         f"generate() (CLI: --reference-model)")
