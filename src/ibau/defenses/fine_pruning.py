"""Fine-Pruning: prune the last convolution's channels that are dormant on clean data, then fine-tune.

Liu, Dolan-Gavitt and Garg, "Fine-Pruning: Defending Against Backdooring Attacks on Deep Neural
Networks", RAID 2018, https://arxiv.org/abs/1805.12185. Setting of the I-BAU paper (SPEC §3): 1,000 of
the clean images measure activations and supervise the pruning, the other clean images fine-tune.

The module also holds :func:`conv_sites`, the tracing helper NAD uses to find its distillation layers.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import nn
from torch.nn.utils import prune
from tqdm.auto import tqdm

from ..data.arrays import ImageSet
from ..utils import eval_mode
from .base import Defense, DefenseResult
from .config import DefenseConfig, setting
from .finetune import fit

#: Activation modules with f(0) = 0: masking a channel after them equals zeroing the channel's weights.
ZERO_PRESERVING = (nn.ReLU, nn.ReLU6, nn.ELU, nn.LeakyReLU, nn.GELU, nn.SiLU, nn.Mish, nn.CELU, nn.SELU,
                   nn.Hardswish, nn.Tanh)


@dataclass
class ConvSite:
    """One executed ``nn.Conv2d`` and the feature that stands for its channels.

    ``feature`` is the module whose output is measured (and masked): the activation module that directly
    consumes the output of the BatchNorm that directly consumes the conv's output; the BatchNorm when no
    such activation follows (e.g. a functional ReLU); the conv itself when no affine BatchNorm follows.
    Zeroing a channel's conv weight and bias (and BatchNorm weight and bias) makes that feature's
    channel exactly zero.
    """

    conv_name: str
    conv: nn.Conv2d
    bn_name: str | None
    bn: nn.BatchNorm2d | None
    feature_name: str
    feature: nn.Module
    shape: tuple[int, ...]  # the feature's C×H×W


def conv_sites(model: nn.Module, sample: torch.Tensor) -> list[ConvSite]:
    """Every ``nn.Conv2d`` call of ``model(sample)`` in execution order, with its BN/activation successors.

    Successors are found by tensor identity: a module "directly follows" when its first input is the
    very tensor the previous one returned. ``model`` is run in eval mode without gradients.
    """
    names = {m: n for n, m in model.named_modules()}
    calls: list[tuple[nn.Module, object, object]] = []

    def hook(module, inputs, output):
        calls.append((module, inputs[0] if inputs else None, output))

    handles = [m.register_forward_hook(hook) for m in model.modules() if not list(m.children())]
    try:
        with eval_mode(model), torch.no_grad():
            model(sample)
    finally:
        for h in handles:
            h.remove()

    def consumer(after: int, tensor) -> tuple[int, nn.Module] | None:
        for j in range(after + 1, len(calls)):
            if calls[j][1] is tensor:
                return j, calls[j][0]
        return None

    sites: list[ConvSite] = []
    for i, (module, _, out) in enumerate(calls):
        if not isinstance(module, nn.Conv2d) or not isinstance(out, torch.Tensor):
            continue
        bn: nn.BatchNorm2d | None = None
        feature: nn.Module | None = None
        found = consumer(i, out)
        if found and isinstance(found[1], nn.BatchNorm2d) and found[1].affine \
                and found[1].num_features == module.out_channels:
            j, bn = found[0], found[1]
            feature = found[1]
            act = consumer(j, calls[j][2])
            if act and isinstance(act[1], ZERO_PRESERVING):
                feature = act[1]
        feature = feature or module
        shape = tuple(out.shape[1:])
        sites.append(ConvSite(names[module], module, names.get(bn) if bn is not None else None, bn,
                              names[feature], feature, shape))
    return sites


#: What ``prune_size`` and ``step`` accept.
_COUNT_OR_FRACTION = "an int >= 1 or a float in (0, 1)"


def _count_or_fraction(value) -> bool:
    return (isinstance(value, int) and not isinstance(value, bool) and value >= 1) or \
           (isinstance(value, float) and 0 < value < 1)


@dataclass(frozen=True)
class FinePruningConfig(DefenseConfig):
    """Options of :class:`FinePruning`.

    Args:
        prune_size: clean images that measure activations and supervise the pruning; an int (default
            1000, the paper's 1,000 of 5,000) or a fraction in (0, 1) of the clean set. The rest fine-tune.
        step: channels pruned per step: an int >= 1 (default 1, one at a time as in the paper) or a
            fraction in (0, 1) of the layer's channels (rounded up).
        max_acc_drop: stop before the prune-set ACC falls below (unpruned ACC − max_acc_drop), in ACC
            units (default 0.05 = 5 points; Liu et al. stop at a 4-point drop, the I-BAU appendix
            mentions 20%). Ignored when ``acc_floor`` is given.
        acc_floor: absolute prune-set ACC floor in [0, 1] (default None: use ``max_acc_drop``).
        epochs: fine-tuning epochs after pruning (default 10).
        lr: Adam learning rate of the fine-tuning (default 1e-4, as :class:`FineTune`).
        batch_size: fine-tuning batch size (default 128).
        seed: seeds the prune/fine-tune split, the batch order and dropout masks (default 0).
        device: ``None`` uses CUDA when available.
    """

    prune_size: int | float = setting(1000, test=_count_or_fraction, must=_COUNT_OR_FRACTION,
                                      hint="e.g. 1000 images or 0.2 of the clean set")
    step: int | float = setting(1, test=_count_or_fraction, must=_COUNT_OR_FRACTION,
                                hint="e.g. 1 channel or 0.05 of the channels")
    max_acc_drop: float = setting(0.05, ge=0, le=1, hint="in ACC units, e.g. 0.05 for 5 points")
    acc_floor: float | None = setting(None, ge=0, le=1, optional=True, hint="e.g. 0.8")
    epochs: int = setting(10, ge=0)
    lr: float = setting(1e-4, gt=0, hint="e.g. 1e-4")
    batch_size: int = setting(128, ge=1)


def _resolve(value: int | float, total: int) -> int:
    return value if isinstance(value, int) else max(1, math.ceil(value * total))


class FinePruning(Defense):
    """Prune dormant channels of the last convolution, then fine-tune (Liu et al., RAID 2018,
    https://arxiv.org/abs/1805.12185).

    1. Split the clean set: ``prune_size`` images (seeded draw) for pruning, the rest for fine-tuning.
    2. Mean activation per channel of the last executed ``nn.Conv2d`` on the prune images, measured
       after its BatchNorm and activation module when they directly follow (see :class:`ConvSite`;
       the small VGG: after the ELU), else at the BatchNorm / conv output.
    3. Mask channels in increasing order of mean activation, ``step`` at a time, while the prune-set ACC
       stays >= the floor; the last level at or above the floor is kept (at most all channels but one).
    4. Make it permanent: zero the pruned channels' conv weight and bias and their BatchNorm weight and
       bias, so those channels output exactly zero. Checkpoint ``"pruned"``.
    5. Fine-tune on the other images with Adam (:func:`ibau.defenses.finetune.fit`), pruned weights held
       at zero by ``torch.nn.utils.prune`` masks that are removed at the end: the returned model is a plain
       module with the input's state_dict keys. Checkpoints ``"epoch k"``.

    ``DefenseResult.extra``: ``pruned_channels`` (indices), ``layer`` and ``measured_at`` (module names),
    ``channels``, ``acc_unpruned``/``acc_floor``/``acc_pruned`` (prune-set ACC), ``prune_size``,
    ``finetune_size``.

    >>> FinePruning(prune_size=0.25, step=4, epochs=2).config.step
    4
    """

    name = "fine_pruning"
    label = "Fine-Pruning"
    config_class = FinePruningConfig

    def _run(self, model: nn.Module, clean: ImageSet, progress: bool) -> DefenseResult:
        c = self.config
        dev = self._device
        n_prune = _resolve(c.prune_size, len(clean))
        if n_prune >= len(clean):
            raise ValueError(f"fine_pruning: prune_size={c.prune_size!r} leaves no clean images to fine-tune on "
                             f"(the clean set has {len(clean)}); pass a smaller prune_size, e.g. a fraction like 0.2")
        order = torch.randperm(len(clean), generator=torch.Generator().manual_seed(c.seed))
        prune_set, tune_set = clean.subset(order[:n_prune]), clean.subset(order[n_prune:])

        sites = conv_sites(model, prune_set.images[:2].to(dev))
        if not sites:
            raise ValueError("fine_pruning needs a model with an nn.Conv2d layer; this model has none")
        site = sites[-1]
        channels = site.conv.out_channels
        model.eval()
        x = prune_set.images.to(dev)
        y = prune_set.labels.to(dev)

        # Per-channel mean activation and a fast evaluator of the masked model.
        evaluate, activation = self._masked_evaluator(model, site, x)
        ranking = torch.argsort(activation).tolist()
        acc0 = evaluate(torch.ones(channels, device=dev), y)
        floor = c.acc_floor if c.acc_floor is not None else acc0 - c.max_acc_drop
        step = _resolve(c.step, channels)

        kept, acc_kept = 0, acc0
        bar = tqdm(total=channels - 1, desc="fine_pruning: prune", disable=not progress, leave=False)
        while kept < channels - 1:
            k = min(kept + step, channels - 1)
            mask = torch.ones(channels, device=dev)
            mask[ranking[:k]] = 0
            acc = evaluate(mask, y)
            if acc < floor:
                break
            bar.update(k - kept)
            kept, acc_kept = k, acc
        bar.close()
        pruned = sorted(ranking[:kept])

        params = _prunable(site)
        with torch.no_grad():
            for module, pname in params:
                getattr(module, pname)[pruned] = 0
        acc_pruned = _accuracy(model, x, y)
        self.checkpoint(model, "pruned")

        if c.epochs > 0:
            for module, pname in params:
                mask = torch.ones_like(getattr(module, pname))
                mask[pruned] = 0
                prune.custom_from_mask(module, pname, mask)
            try:
                fit(self, model, tune_set, c.epochs, c.lr, c.batch_size, c.seed, progress, "fine_pruning: fine-tune")
            finally:
                for module, pname in params:
                    prune.remove(module, pname)
        extra = {"pruned_channels": pruned, "layer": site.conv_name, "measured_at": site.feature_name,
                 "channels": channels, "acc_unpruned": acc0, "acc_floor": floor, "acc_pruned": acc_pruned,
                 "acc_last_kept_search": acc_kept, "prune_size": n_prune, "finetune_size": len(tune_set)}
        return DefenseResult(model=model.eval(), extra=extra)

    def _masked_evaluator(self, model: nn.Module, site: ConvSite, x: torch.Tensor):
        """``(evaluate(mask, labels) -> ACC, mean activation per channel)``.

        For an ``nn.Sequential`` whose top-level child is the feature module, the prefix output is computed
        once and only the suffix is re-run per mask; otherwise a forward hook masks the feature output.
        """
        index = next((i for i, m in enumerate(model) if m is site.feature), None) \
            if isinstance(model, nn.Sequential) else None
        batches = range(0, len(x), 512)
        if index is not None and isinstance(model, nn.Sequential):
            head, tail = model[:index + 1], model[index + 1:]
            with torch.no_grad():
                feats = torch.cat([head(x[i:i + 512]) for i in batches])
            activation = feats.transpose(0, 1).flatten(1).mean(1)

            def evaluate_tail(mask: torch.Tensor, y: torch.Tensor) -> float:
                with torch.no_grad():
                    pred = torch.cat([tail(feats[i:i + 512] * mask.view(1, -1, 1, 1)).argmax(1) for i in batches])
                return float((pred == y).float().mean())

            return evaluate_tail, activation

        sums = []
        handle = site.feature.register_forward_hook(lambda m, i, out: sums.append(out.transpose(0, 1).flatten(1).sum(1)))
        try:
            with torch.no_grad():
                for i in batches:
                    model(x[i:i + 512])
        finally:
            handle.remove()
        activation = torch.stack(sums).sum(0) / (len(x) * math.prod(site.shape[1:]))

        def evaluate(mask: torch.Tensor, y: torch.Tensor) -> float:
            h = site.feature.register_forward_hook(lambda m, i, out: out * mask.view(1, -1, 1, 1))
            try:
                return _accuracy(model, x, y)
            finally:
                h.remove()

        return evaluate, activation


def _prunable(site: ConvSite) -> list[tuple[nn.Module, str]]:
    """The per-channel parameters that zero a channel of ``site``'s feature."""
    out: list[tuple[nn.Module, str]] = [(site.conv, "weight")]
    if site.conv.bias is not None:
        out.append((site.conv, "bias"))
    if site.bn is not None:
        out += [(site.bn, "weight"), (site.bn, "bias")]
    return out


def _accuracy(model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> float:
    with torch.no_grad():
        pred = torch.cat([model(x[i:i + 512]).argmax(1) for i in range(0, len(x), 512)])
    return float((pred == y).float().mean())
