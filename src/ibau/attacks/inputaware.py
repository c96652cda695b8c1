"""Input-aware dynamic backdoor (IAB): a generator makes a different trigger for every input.

Nguyen & Tran, "Input-Aware Dynamic Backdoor Attack", NeurIPS 2020, https://arxiv.org/abs/2010.08138.
Two small networks map an image x to a pattern ``g(x)`` (C×H×W) and a mask ``m(x)`` (1×H×W); the
backdoored input is ``(1 − m(x))·x + m(x)·g(x)``. Training (:meth:`InputAware.fit`, called by
``ibau attack`` in place of plain training):

1. the mask network is trained alone for ``mask_epochs``: its mean must stay under ``mask_density`` and
   its masks must differ across inputs (the diversity loss);
2. the classifier and the pattern network are trained jointly, each minibatch split into backdoor
   samples (a ``poison_ratio`` fraction, own trigger, target label), *cross-trigger* samples
   (``cross_ratio``, the trigger of another image, true label: a trigger only works on its own input)
   and clean samples, plus ``lambda_div`` × the diversity loss ``‖x − x'‖ / ‖g(x) − g(x')‖``.

The networks here are three 3×3 convolutions each (``width`` channels), smaller than the authors'
encoder–decoder so that CPU training stays cheap. Their weights are the trigger: ``spec()`` stores them
rounded to 1e-4 (the rounded weights are the ones used), so ``trigger.json`` rebuilds it exactly.
"""
from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import nn
from tqdm.auto import tqdm

from .base import Trigger


def _net(cin: int, cout: int, width: int) -> nn.Sequential:
    return nn.Sequential(nn.Conv2d(cin, width, 3, padding=1), nn.ReLU(), nn.Conv2d(width, width, 3, padding=1),
                         nn.ReLU(), nn.Conv2d(width, cout, 3, padding=1))


def _rounded_state(net: nn.Module) -> dict[str, list]:
    return {k: torch.round(v.double() * 1e4).div(1e4).tolist() for k, v in net.state_dict().items()}


class InputAware(Trigger):
    """Input-aware dynamic trigger (a pattern network and a mask network).

    Args:
        channels: image channels (default 3). width: hidden channels of both networks (default 16).
        mask_density: target mean of the mask (default 0.032, the authors').
        cross_ratio: cross-trigger samples per minibatch, as a fraction (default 0.1, the authors').
        lambda_div: weight of the diversity loss (default 1, the authors').
        mask_epochs: epochs of mask-network pre-training (default 5; the authors use 25).
        generator, mask_net: stored weights (``spec()``); default None: seeded random initialisation.
        seed: initialisation seed (default 0). target: target class (default 0); all_to_all supported.

    >>> t = InputAware(seed=0)
    >>> x = torch.rand(2, 3, 8, 8)
    >>> t.apply(x).shape, torch.allclose(t.apply(x[:1]), t.apply(x)[:1], atol=1e-6)  # per image, not per batch
    (torch.Size([2, 3, 8, 8]), True)
    """

    name = "iab"
    poisoning = "fit"  # no poisoned set: fit trains the networks with the model

    def __init__(self, channels: int = 3, width: int = 16, mask_density: float = 0.032, cross_ratio: float = 0.1,
                 lambda_div: float = 1.0, mask_epochs: int = 5, generator: dict | None = None,
                 mask_net: dict | None = None, seed: int = 0, target: int | None = 0, all_to_all: bool = False):
        super().__init__(target=target, all_to_all=all_to_all)
        if not 0 < mask_density < 1 or not 0 <= cross_ratio < 1 or lambda_div < 0 or mask_epochs < 0 or width < 1:
            raise ValueError("InputAware needs 0 < mask_density < 1, 0 <= cross_ratio < 1, lambda_div >= 0, "
                             f"mask_epochs >= 0 and width >= 1; got {mask_density}, {cross_ratio}, {lambda_div}, "
                             f"{mask_epochs}, {width}")
        self.channels, self.width, self.mask_density = int(channels), int(width), float(mask_density)
        self.cross_trigger_ratio, self.lambda_div, self.mask_epochs = float(cross_ratio), float(lambda_div), int(mask_epochs)
        self.seed = int(seed)
        # (poisoning's noise mode reads ``cross_ratio``, which stays 0: IAB's cross samples are made while training)
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(self.seed)
            self.generator = _net(self.channels, self.channels, self.width)
            self.mask_net = _net(self.channels, 1, self.width)
        for net, state in ((self.generator, generator), (self.mask_net, mask_net)):
            if state is not None:
                net.load_state_dict({k: torch.tensor(v, dtype=torch.float32) for k, v in state.items()})
        self._round()
        self.generator.eval().requires_grad_(False)
        self.mask_net.eval().requires_grad_(False)

    def _round(self) -> None:
        """Keep the weights at 1e-4 resolution: what ``spec()`` stores is exactly what is used."""
        with torch.no_grad():
            for net in (self.generator, self.mask_net):
                for p in net.parameters():
                    p.copy_(torch.round(p.double() * 1e4).div(1e4).float())

    # --- the trigger -------------------------------------------------------------------------
    def pattern_of(self, x: torch.Tensor) -> torch.Tensor:
        return (torch.tanh(self.generator.to(x.device)(x)) + 1) / 2

    def mask_of(self, x: torch.Tensor) -> torch.Tensor:
        return torch.sigmoid(self.mask_net.to(x.device)(x))

    def stamp(self, x: torch.Tensor, source: torch.Tensor | None = None) -> torch.Tensor:
        """``x`` with the trigger made from ``source`` (default ``x`` itself; another image: cross mode)."""
        src = x if source is None else source
        m = self.mask_of(src)
        return ((1 - m) * x + m * self.pattern_of(src)).clamp(0, 1)

    def apply(self, x: torch.Tensor) -> torch.Tensor:
        if x.dim() != 4 or x.shape[1] != self.channels:
            raise ValueError(f"this iab trigger stamps N×{self.channels}×H×W batches; got shape {tuple(x.shape)}")
        with torch.no_grad():
            return self.stamp(x)

    # --- joint training ----------------------------------------------------------------------
    @staticmethod
    def diversity(x1: torch.Tensor, x2: torch.Tensor, t1: torch.Tensor, t2: torch.Tensor) -> torch.Tensor:
        """``mean ‖x1 − x2‖ / ‖t1 − t2‖`` per pair: small when different inputs get different triggers."""
        dx = (x1 - x2).flatten(1).norm(dim=1)
        dt = (t1 - t2).flatten(1).norm(dim=1)
        return (dx / (dt + 1e-3)).mean()

    def fit(self, model: nn.Module, images: torch.Tensor, labels: torch.Tensor, num_classes: int,
            poison_ratio: float = 0.1, epochs: int = 10, lr: float = 1e-3, batch_size: int = 128, seed: int = 0,
            device: str | torch.device = "cpu", progress: bool = True,
            on_epoch: Callable[..., None] | None = None) -> nn.Module:
        """Pre-train the mask network, then train ``model`` and the pattern network together (see the module
        docstring). ``on_epoch(epoch, mean_loss, state)`` is called after each joint epoch."""
        from ..training import iterate_batches

        if not 0 < poison_ratio + self.cross_trigger_ratio < 1:
            raise ValueError(f"iab needs poison_ratio + cross_ratio in (0, 1), got {poison_ratio} + {self.cross_trigger_ratio}")
        dev = torch.device(device)
        gen = torch.Generator().manual_seed(seed)
        x_all, y_all = images, labels
        self.generator.to(dev).train().requires_grad_(True)
        self.mask_net.to(dev).train().requires_grad_(True)
        opt_m = torch.optim.Adam(self.mask_net.parameters(), lr=1e-2, betas=(0.5, 0.9))
        for _ in tqdm(range(self.mask_epochs), desc="iab: mask network", disable=not progress, leave=False):
            for x, _y in iterate_batches(x_all, y_all, batch_size, gen):
                x = x.to(dev)
                x2 = x[torch.randperm(len(x), generator=gen).to(dev)]
                m1, m2 = self.mask_of(x), self.mask_of(x2)
                loss = F.relu(m1.mean() - self.mask_density) * 100 + self.lambda_div * self.diversity(x, x2, m1, m2)
                opt_m.zero_grad(set_to_none=True)
                loss.backward()
                opt_m.step()
        self.mask_net.eval().requires_grad_(False)
        model.to(dev).train()
        opt = torch.optim.Adam(list(model.parameters()) + list(self.generator.parameters()), lr=lr)
        for epoch in tqdm(range(epochs), desc="iab: joint training", disable=not progress, leave=False):
            total, count = 0.0, 0
            for x, y in iterate_batches(x_all, y_all, batch_size, gen):
                x, y = x.to(dev), y.to(dev)
                n = len(x)
                n_bd, n_cross = int(round(poison_ratio * n)), int(round(self.cross_trigger_ratio * n))
                other = x[torch.randperm(n, generator=gen).to(dev)]
                bd = self.stamp(x[:n_bd])
                cross = self.stamp(x[n_bd:n_bd + n_cross], source=other[n_bd:n_bd + n_cross])
                inputs = torch.cat([bd, cross, x[n_bd + n_cross:]])
                targets = torch.cat([self.target_labels(y[:n_bd], num_classes), y[n_bd:]])
                loss = F.cross_entropy(model(inputs), targets)
                if n_bd:
                    loss = loss + self.lambda_div * self.diversity(x[:n_bd], other[:n_bd], self.pattern_of(x[:n_bd]),
                                                                   self.pattern_of(other[:n_bd]))
                opt.zero_grad(set_to_none=True)
                loss.backward()
                opt.step()
                total, count = total + float(loss.detach()) * n, count + n
            if on_epoch is not None:
                on_epoch(epoch, total / max(count, 1), {"epoch": epoch + 1})
        self.generator.eval().requires_grad_(False)
        self.generator.cpu()
        self.mask_net.cpu()
        self._round()
        return model.eval()

    def _params(self) -> dict:
        return {"channels": self.channels, "width": self.width, "mask_density": self.mask_density,
                "cross_ratio": self.cross_trigger_ratio, "lambda_div": self.lambda_div, "mask_epochs": self.mask_epochs,
                "generator": _rounded_state(self.generator), "mask_net": _rounded_state(self.mask_net),
                "seed": self.seed, **super()._params()}

    def __repr__(self) -> str:
        shown = ", ".join(f"{k}={v!r}" for k, v in self._params().items() if k not in ("generator", "mask_net"))
        return f"InputAware(<generator and mask networks, width {self.width}>, {shown})"
