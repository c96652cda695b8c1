"""DP-SGD training from scratch on the poisoned training set (SPEC §3).

Du, Jia, Song, "Robust Anomaly Detection and Backdoor Attack Detection via Differential Privacy",
ICLR 2020, https://arxiv.org/abs/1911.07116

Differentially private SGD (Abadi et al. 2016) clips every example's gradient to ``max_grad_norm`` and adds
Gaussian noise of standard deviation ``noise_multiplier · max_grad_norm`` to the summed batch gradient, so
no single example, and in practice no small group of rare examples such as the poisoned ones, moves the
model much. The defense therefore does not sanitise the given model: it trains a **fresh** model of the
same architecture from scratch on the (poisoned) training set with DP-SGD, using Opacus
(https://opacus.ai): Poisson-sampled batches, per-example clipping, Gaussian noise, and a privacy
accountant that reports the ε spent at ``delta``.

Notes and deviations:

- **Inputs.** Unlike the other defenses (poisoned model + clean set), DP needs the poisoned training set:
  pass it as ``DPSGD(train=ImageSet)``. The model given to :meth:`run` only supplies the architecture;
  its weights are discarded (every module with ``reset_parameters`` is re-initialised). The clean set is
  not trained on: it is only used to check that the training images and the model's output width fit.
  Evaluation belongs to the callback, as for every defense.
- **Architecture.** BatchNorm mixes examples within a batch, which per-example clipping cannot allow, so
  ``opacus.validators.ModuleValidator.fix`` replaces every BatchNorm with a GroupNorm (``gcd(32,
  channels)`` groups) and in-place activations are made out-of-place. The returned model therefore has
  a *different architecture* from the input model (its state dict has different keys and shapes); build
  it again with :func:`dp_architecture` to load saved weights.
- **Noise.** SPEC §3 (from the I-BAU paper's setup) uses noise multiplier 50 on CIFAR-10 and 1.5 on
  GTSRB; the default here is 1.5. Du et al. tune the noise level per dataset as well.
- **Optimizer.** Plain SGD with momentum under DP-SGD; the paper's exact learning-rate schedule is not
  reproduced.
- **Measured** (digits BadNets of the tests, 20% of 1,000 training images poisoned, 20 epochs, batch 64,
  lr 0.1): σ = 1.5 gives ε = 4.2 at δ = 1e-5, held-out ACC 31.5% and ASR 100%; σ = 0 (clipping only)
  ACC 96.7%, ASR 99.7%. At a 20% poison ratio the poisons are not rare, which is what DP relies on.

Checkpoints: after every epoch (``"epoch k"``).
"""
from __future__ import annotations

import copy
import math
import warnings
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn
from tqdm.auto import tqdm

from ..data.arrays import ImageSet, check_labels
from .base import Defense, DefenseResult, num_classes_of
from .config import DefenseConfig, setting

ACCOUNTANTS = ("rdp", "prv", "gdp")


@dataclass(frozen=True)
class DPConfig(DefenseConfig):
    """Args:
        noise_multiplier: Gaussian noise std as a multiple of max_grad_norm (default 1.5; SPEC §3: 50 for
            CIFAR-10, 1.5 for GTSRB).
        max_grad_norm: per-example gradient ℓ2 clipping bound (default 1.0).
        epochs: training epochs from scratch (default 30).
        lr: SGD learning rate (default 0.1).
        momentum: SGD momentum (default 0.9).
        batch_size: expected batch size; batches are Poisson-sampled with rate batch_size / N (default 128).
        delta: δ at which the spent ε is reported (default 1e-5).
        accountant: Opacus privacy accountant, "rdp", "prv" or "gdp" (default "rdp").
        seed: seeds the initialisation, the batch sampling and the noise (default 0).
        device: default CUDA if available.
    """

    noise_multiplier: float = setting(1.5, ge=0, hint="e.g. 1.5 (GTSRB) or 50 (CIFAR-10)")
    max_grad_norm: float = setting(1.0, gt=0, hint="e.g. 1.0")
    epochs: int = setting(30, ge=1)
    lr: float = setting(0.1, gt=0, hint="e.g. 0.1")
    momentum: float = setting(0.9, ge=0, lt=1, hint="e.g. 0.9")
    batch_size: int = setting(128, ge=1)
    delta: float = setting(1e-5, gt=0, lt=1, hint="use less than 1/N, e.g. 1e-5")
    accountant: str = setting("rdp", choices=ACCOUNTANTS)


def dp_architecture(model: nn.Module) -> nn.Module:
    """A DP-SGD-compatible copy of ``model``'s architecture: BatchNorm → GroupNorm (Opacus'
    ``ModuleValidator.fix``), in-place activations made out-of-place, weights re-initialised from the
    global torch RNG (seed it first). The input model is not changed.

    >>> net = dp_architecture(nn.Sequential(nn.Conv2d(3, 4, 3), nn.BatchNorm2d(4), nn.ReLU(inplace=True)))
    >>> [type(m).__name__ for m in net]
    ['Conv2d', 'GroupNorm', 'ReLU']
    """
    from opacus.validators import ModuleValidator

    net = copy.deepcopy(model)
    for m in net.modules():
        reset = getattr(m, "reset_parameters", None)
        if callable(reset):
            reset()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        net = ModuleValidator.fix(net)
    for m in net.modules():
        if getattr(m, "inplace", False) is True:
            m.inplace = False  # in-place ops after a hooked layer break Opacus' per-sample gradients
    net.train()
    errors = ModuleValidator.validate(net, strict=False)
    if errors:
        raise ValueError(f"dp cannot train this architecture with DP-SGD: {errors[0]}")
    return net


def make_private(net: nn.Module, train: ImageSet, config: DPConfig, device: torch.device):
    """Wrap ``net`` (already DP-compatible, on ``device``), an SGD optimizer and a seeded loader over
    ``train`` with Opacus. Returns ``(private_module, dp_optimizer, poisson_loader, privacy_engine)``."""
    from opacus import PrivacyEngine

    data = torch.utils.data.TensorDataset(train.images, train.labels)
    loader = torch.utils.data.DataLoader(data, batch_size=config.batch_size, shuffle=True,
                                         generator=torch.Generator().manual_seed(config.seed))
    optimizer = torch.optim.SGD(net.parameters(), lr=config.lr, momentum=config.momentum)
    noise = torch.Generator(device=device).manual_seed(config.seed + 1)
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*[Ss]ecure RNG.*")  # seeded noise is the point here
        engine = PrivacyEngine(accountant=config.accountant)
        private, optimizer, loader = engine.make_private(
            module=net, optimizer=optimizer, data_loader=loader, noise_multiplier=config.noise_multiplier,
            max_grad_norm=config.max_grad_norm, poisson_sampling=True, noise_generator=noise)
    return private, optimizer, loader, engine


class DPSGD(Defense):
    """Train a fresh model of the given architecture from scratch on the poisoned training set with DP-SGD
    (Du et al., ICLR 2020, https://arxiv.org/abs/1911.07116), via Opacus. See the module docstring for
    the inputs, the BatchNorm → GroupNorm change, and the deviations.

    Build it with the training set: ``DPSGD(config=None, train=ImageSet, **overrides)``; :meth:`run`
    then takes the model (architecture only) and the clean set (checks only) as usual.
    ``result.extra`` records the ε spent at ``delta`` (infinite without noise; ``accountant_warnings``
    keeps what the accountant warned, e.g. that ε is a loose upper bound at σ = 50) and the noise
    multiplier, clipping bound, sample rate and steps that Opacus actually used.

    >>> DPSGD(epochs=2, noise_multiplier=50.0).config.noise_multiplier
    50.0
    """

    name = "dp"
    config_class = DPConfig
    needs_training_data = True
    arch_prefix = "dp:"

    def __init__(self, config: DPConfig | None = None, train: ImageSet | None = None, **overrides):
        super().__init__(config, **overrides)
        if train is not None and not isinstance(train, ImageSet):
            raise ValueError(f"dp train must be an ImageSet (the poisoned training set), got {type(train).__name__}")
        self.train_data = train

    def _run(self, model: nn.Module, clean: ImageSet, progress: bool) -> DefenseResult:
        c, dev = self.config, self._device
        train = self.train_data
        if train is None or len(train) == 0:
            raise ValueError("dp trains from scratch on the poisoned training set: pass train=... (an ImageSet) to DPSGD")
        if train.shape != clean.shape:
            raise ValueError(f"dp training images are {train.shape} but the model's clean images are {clean.shape}; use one image size")
        num_classes = num_classes_of(model, clean)
        check_labels(train.labels, num_classes=num_classes, name="training labels")

        net = dp_architecture(model).to(dev)
        template = copy.deepcopy(net)
        private, optimizer, loader, engine = make_private(net, train, c, dev)
        steps = c.epochs * len(loader)
        bar = tqdm(total=steps, desc="dp-sgd", disable=not progress, leave=False)
        epsilon, notes = 0.0, set[str]()
        for epoch in range(c.epochs):
            private.train()
            total, count = 0.0, 0
            for x, y in loader:
                x, y = x.to(dev), y.to(dev)
                loss = F.cross_entropy(private(x), y)
                optimizer.zero_grad(set_to_none=True)
                with warnings.catch_warnings():  # the first layer's input needs no gradient: harmless
                    warnings.filterwarnings("ignore", message="Full backward hook is firing")
                    loss.backward()
                optimizer.step()
                total += float(loss.detach()) * len(y)
                count += len(y)
                bar.update(1)
            # no noise, no privacy: ε is infinite (the accountant would only warn about its alphas)
            epsilon = math.inf
            if c.noise_multiplier > 0:
                with warnings.catch_warnings(record=True) as caught:  # e.g. σ = 50: "optimal order is the
                    warnings.simplefilter("always")                # largest alpha" (ε a looser upper bound)
                    epsilon = float(engine.get_epsilon(c.delta))
                notes.update(str(w.message) for w in caught)
            bar.set_postfix(loss=f"{total / max(count, 1):.3f}", eps=f"{epsilon:.2f}")
            self.checkpoint(net, step=f"epoch {epoch + 1}")
        bar.close()

        result = template  # a plain module (no Opacus hooks or per-sample attributes) with the trained weights
        result.load_state_dict(net.state_dict())
        sample_rates = sorted({float(h[1]) for h in engine.accountant.history})
        return DefenseResult(model=result.eval(), extra={
            "epsilon": epsilon, "delta": c.delta,
            "noise_multiplier": float(optimizer.noise_multiplier),
            "max_grad_norm": float(optimizer.max_grad_norm),
            "accountant": c.accountant, "sample_rate": sample_rates[0] if len(sample_rates) == 1 else sample_rates,
            "steps": int(sum(h[2] for h in engine.accountant.history)), "train_size": len(train),
            "accountant_warnings": sorted(notes),
            "architecture": "BatchNorm replaced by GroupNorm (Opacus ModuleValidator.fix)"})
