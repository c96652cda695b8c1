"""Trigger optimisation shared by the generated triggers (Trojan SQ/WM, ℓ0/ℓ2-invisible).

TrojanNN (Liu et al., "Trojaning Attack on Neural Networks", NDSS 2018,
https://doi.org/10.14722/ndss.2018.23291) picks internal neurons that are strongly connected to the
previous layer and optimises the trigger so that stamped inputs excite them; the poisoned training then
ties those neurons to the target label, which makes the trigger easy to learn. Li et al. ("Invisible
Backdoor Attacks on Deep Neural Networks via Steganography and Regularization", TDSC 2021,
https://arxiv.org/abs/1909.02742) run the same optimisation under an ℓ0 or ℓ2 budget.

Here a "neuron" is a channel of the reference model's last convolution, scored by the ℓ1 norm of its
incoming kernel (TrojanNN's connectivity criterion); the objective is the mean activation of the chosen
channels over a batch of stamped reference images. Each trigger supplies how it stamps its parameter
and how it projects the parameter back onto its constraint after every Adam step.
"""
from __future__ import annotations

from collections.abc import Callable

import torch
from torch import nn


def last_conv(model: nn.Module) -> nn.Conv2d:
    convs = [m for m in model.modules() if isinstance(m, nn.Conv2d)]
    if not convs:
        raise ValueError("trigger generation needs a reference model with at least one Conv2d layer")
    return convs[-1]


def select_neurons(model: nn.Module, count: int = 2) -> list[int]:
    """Channels of the last convolution with the largest incoming-weight ℓ1 norm (TrojanNN)."""
    w = last_conv(model).weight.detach()
    if not 1 <= count <= w.shape[0]:
        raise ValueError(f"neurons must be between 1 and {w.shape[0]} (channels of the last conv), got {count}")
    return w.abs().sum((1, 2, 3)).topk(count).indices.sort().values.tolist()


def excite(model: nn.Module, images: torch.Tensor, param: torch.Tensor,
           stamp: Callable[[torch.Tensor, torch.Tensor], torch.Tensor],
           project: Callable[[torch.Tensor], torch.Tensor], neurons: int = 2, steps: int = 200,
           lr: float = 0.05, batch_size: int = 64, seed: int = 0) -> torch.Tensor:
    """Maximise the chosen neurons' activation on ``stamp(images, param)`` by projected Adam ascent.

    Args:
        model: reference classifier (left unchanged; run in eval mode).
        images: reference images N×C×H×W in [0, 1] (minibatches are drawn from them, seeded).
        param: initial trigger parameter (already feasible); a new tensor is returned.
        stamp: ``(x, param) -> stamped x``; project: ``param -> feasible param`` (applied after each step).
        neurons: how many last-conv channels to excite (default 2); steps, lr, batch_size: Adam settings.
        seed: seed of the minibatch draws.
    """
    if images.dim() != 4 or len(images) == 0:
        raise ValueError(f"trigger generation needs reference images shaped N×C×H×W, got {tuple(images.shape)}")
    if steps < 1:
        raise ValueError(f"trigger generation needs steps >= 1, got {steps}")
    dev = next(model.parameters()).device
    channels = select_neurons(model, neurons)
    captured: list[torch.Tensor] = []
    hook = last_conv(model).register_forward_hook(lambda _m, _i, out: captured.append(out))
    was_training = model.training
    grads = [p.requires_grad for p in model.parameters()]
    model.eval().requires_grad_(False)
    param = param.detach().clone().to(dev).requires_grad_(True)
    opt = torch.optim.Adam([param], lr=lr)
    gen = torch.Generator().manual_seed(seed)
    try:
        for _ in range(steps):
            idx = torch.randint(len(images), (min(batch_size, len(images)),), generator=gen)
            captured.clear()
            model(stamp(images[idx].to(dev), param))
            loss = -captured[-1][:, channels].mean()
            opt.zero_grad()
            loss.backward()
            opt.step()
            with torch.no_grad():
                param.copy_(project(param))
    finally:
        hook.remove()
        model.train(was_training)
        for p, g in zip(model.parameters(), grads):
            p.requires_grad_(g)
    return param.detach().cpu()
