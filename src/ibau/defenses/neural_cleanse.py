"""Neural Cleanse: reverse-engineer a trigger per class, flag outliers by MAD, unlearn the flagged triggers.

Wang et al., "Neural Cleanse: Identifying and Mitigating Backdoor Attacks in Neural Networks", IEEE S&P
2019, https://doi.org/10.1109/SP.2019.00031 (authors' code: https://github.com/bolunwang/backdoor).

The module-level pieces (:func:`reverse_engineer`, :func:`anomaly_index`, :func:`flag_outliers`,
:func:`stamp`) are shared with TABOR (:mod:`ibau.defenses.tabor`), which only adds regularisers to the
reverse-engineering objective.
"""
from __future__ import annotations

import dataclasses
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn
from tqdm.auto import tqdm

from ..data.arrays import ImageSet
from .base import Defense, DefenseResult, num_classes_of
from .config import DefenseConfig, setting
from .finetune import fit

#: Consistency constant that makes the MAD an estimator of the standard deviation under normality.
MAD_CONSISTENCY = 1.4826

#: ``extra(model, x, y, mask, pattern, target) -> scalar tensor``: a term added to the reverse-engineering
#: loss (``y`` are the true labels of the clean batch ``x``, or None when no labels were given).
Regulariser = Callable[[nn.Module, torch.Tensor, "torch.Tensor | None", torch.Tensor, torch.Tensor, int], torch.Tensor]


@dataclass
class ReversedTrigger:
    """A trigger found by :func:`reverse_engineer`.

    Attributes:
        mask: 1×H×W in [0, 1] (CPU). pattern: C×H×W in [0, 1] (CPU).
        l1: ``mask.sum()``, the size Neural Cleanse compares across classes.
        success: fraction of the batch sent to the target when this trigger was recorded.
        cost: the mask-norm weight λ at the end of the optimisation.
        reached: whether any epoch reached the success threshold (else the last trigger is returned).
        steps_run: mini-batches actually used (fewer than ``steps`` after an early stop).
    """

    mask: torch.Tensor
    pattern: torch.Tensor
    l1: float
    success: float
    cost: float
    reached: bool
    steps_run: int = 0


def _squash(raw: torch.Tensor) -> torch.Tensor:
    """NC's tanh parametrisation: unconstrained -> (0, 1)."""
    return torch.tanh(raw) / 2 + 0.5


def _unsquash(value: torch.Tensor) -> torch.Tensor:
    return torch.atanh((value * 2 - 1).clamp(-1 + 1e-4, 1 - 1e-4))


def _batches(n: int, batch_size: int, generator: torch.Generator) -> Iterator[torch.Tensor]:
    """Endless shuffled passes over ``range(n)``, ``batch_size`` (<= n) indices at a time."""
    while True:
        order = torch.randperm(n, generator=generator)
        for start in range(0, n - batch_size + 1, batch_size):  # drop the ragged tail: equal batches
            yield order[start:start + batch_size]


def reverse_engineer(model: nn.Module, images: torch.Tensor, target: int, *, labels: torch.Tensor | None = None,
                     steps: int = 300, batch_size: int = 32, lr: float = 0.1, init_cost: float = 1e-3,
                     cost_multiplier: float = 1.5, success_threshold: float = 0.99, patience: int = 10,
                     epoch_steps: int = 1, early_stop_patience: int | None = None,
                     generator: torch.Generator | None = None, extra: Regulariser | None = None) -> ReversedTrigger:
    """Find the smallest mask ``m`` (1×H×W) and pattern ``p`` (C×H×W) that send ``(1−m)·x + m·p`` to ``target``.

    Minimises ``CE(model((1−m)x + m p), target) + λ·‖m‖₁ (+ extra(...))`` over minibatches of ``images``
    with Adam (betas 0.5, 0.9, as in the authors' code); ``m`` and ``p`` are ``tanh(·)/2 + ½`` of free
    parameters, initialised uniformly at random from ``generator`` (default: a generator seeded with 0),
    which also orders the batches. The model is evaluated in eval mode and its weights are not touched.

    Schedule (Neural Cleanse's): the ``steps`` mini-batches are grouped into epochs of ``epoch_steps``
    (the authors: 1000 epochs of 1000 // 32 = 31 mini-batches). At the end of each epoch, with its mean
    batch attack success ``s``: if ``s ≥ success_threshold`` and the mask is the smallest so far among such
    epochs, the trigger is recorded; after ``patience`` consecutive epochs with ``s ≥ success_threshold`` λ
    (starting at ``init_cost``) is multiplied by ``cost_multiplier``, after ``patience`` consecutive epochs
    below it is divided by it. With ``early_stop_patience`` set, the search stops once λ has been both raised
    and lowered and the recorded mask norm has not improved for that many epochs (the authors' early stop,
    threshold 1.0). The returned trigger is the recorded one, else the last one.
    """
    if steps < 1 or batch_size < 1 or epoch_steps < 1:
        raise ValueError(f"reverse_engineer needs steps, batch_size and epoch_steps >= 1, got {steps}, {batch_size} "
                         f"and {epoch_steps}")
    dev = next(model.parameters()).device
    gen = generator if generator is not None else torch.Generator().manual_seed(0)
    was_training = model.training
    model.eval()
    x_all = images.to(dev)
    y_all = labels.to(dev) if labels is not None else None
    c, h, w = x_all.shape[1:]
    mask_raw = _unsquash(torch.rand(1, h, w, generator=gen)).to(dev).requires_grad_()
    pattern_raw = _unsquash(torch.rand(c, h, w, generator=gen)).to(dev).requires_grad_()
    opt = torch.optim.Adam([mask_raw, pattern_raw], lr=lr, betas=(0.5, 0.9))
    cost, up, down = float(init_cost), 0, 0
    raised = lowered = False
    stale = 0  # epochs since the recorded mask norm last improved
    best: tuple | None = None
    last: tuple | None = None
    batches = _batches(len(x_all), min(batch_size, len(x_all)), gen)
    try:
        for step in range(steps):
            if step % epoch_steps == 0:
                hits, seen = 0.0, 0
            idx = next(batches).to(dev)
            x = x_all[idx]
            mask, pattern = _squash(mask_raw), _squash(pattern_raw)
            logits = model((1 - mask) * x + mask * pattern)
            wanted = torch.full((len(x),), int(target), dtype=torch.long, device=dev)
            l1 = mask.sum()
            loss = F.cross_entropy(logits, wanted) + cost * l1
            if extra is not None:
                loss = loss + extra(model, x, None if y_all is None else y_all[idx], mask, pattern, int(target))
            grads = torch.autograd.grad(loss, [mask_raw, pattern_raw])
            mask_raw.grad, pattern_raw.grad = grads
            hits += float((logits.argmax(1) == wanted).float().mean())
            seen += 1
            last = (mask.detach(), pattern.detach(), float(l1.detach()), hits / seen)
            opt.step()
            if seen < epoch_steps and step + 1 < steps:
                continue
            success = hits / seen  # end of an epoch: the schedule looks at its mean success
            improved = success >= success_threshold and (best is None or last[2] < best[2])
            if improved:
                best = last
            stale = 0 if improved else stale + 1
            if success >= success_threshold:
                up, down = up + 1, 0
            else:
                up, down = 0, down + 1
            if up >= patience:
                cost, up, raised = cost * cost_multiplier, 0, True
            elif down >= patience:
                cost, down, lowered = cost / cost_multiplier, 0, True
            if early_stop_patience is not None and raised and lowered and stale >= early_stop_patience:
                break
    finally:
        model.train(was_training)
    chosen = best if best is not None else last
    assert chosen is not None, "steps must be >= 1"
    return ReversedTrigger(mask=chosen[0].cpu().clone(), pattern=chosen[1].cpu().clone(), l1=chosen[2],
                           success=chosen[3], cost=cost, reached=best is not None, steps_run=step + 1)


def anomaly_index(norms: Sequence[float] | torch.Tensor) -> torch.Tensor:
    """``|norm − median| / (1.4826 · MAD)`` for each entry (medians averaged for even counts, like numpy).

    With a zero MAD, entries equal to the median get 0 and the others infinity.

    >>> [round(v, 3) for v in anomaly_index([10.0, 11.0, 9.0, 10.0, 2.0]).tolist()]
    [0.0, 0.674, 0.674, 0.0, 5.396]
    """
    x = torch.as_tensor(norms, dtype=torch.float64).flatten()
    if x.numel() == 0:
        raise ValueError("anomaly_index needs at least one norm")
    median = x.quantile(0.5)
    dev = (x - median).abs()
    mad = dev.quantile(0.5) * MAD_CONSISTENCY
    if mad == 0:
        return torch.where(dev == 0, torch.zeros_like(dev), torch.full_like(dev, float("inf"))).float()
    return (dev / mad).float()


def flag_outliers(norms: Sequence[float] | torch.Tensor, threshold: float = 2.0) -> list[int]:
    """Indices whose norm is below the median with an anomaly index above ``threshold`` (NC's rule).

    >>> flag_outliers([10.0, 11.0, 9.0, 10.0, 2.0, 30.0])
    [4]
    """
    x = torch.as_tensor(norms, dtype=torch.float64).flatten()
    index = anomaly_index(x)
    below = x < x.quantile(0.5)
    return [i for i in range(len(x)) if bool(below[i]) and float(index[i]) > threshold]


def stamp(images: torch.Tensor, mask: torch.Tensor, pattern: torch.Tensor) -> torch.Tensor:
    """``(1 − mask)·images + mask·pattern``, clamped to [0, 1] (mask 1×H×W or C×H×W, pattern C×H×W)."""
    m, p = mask.to(images.device, images.dtype), pattern.to(images.device, images.dtype)
    return ((1 - m) * images + m * p).clamp(0, 1)


def unlearning_set(clean: ImageSet, triggers: dict[int, dict[str, torch.Tensor]], flagged: Sequence[int],
                   fraction: float, generator: torch.Generator) -> ImageSet:
    """The clean set with a random ``fraction`` of images stamped with a flagged class's reversed trigger
    (each stamped image draws one flagged class uniformly), labels unchanged (NC's unlearning data)."""
    n = len(clean)
    k = max(1, round(fraction * n))
    chosen = torch.randperm(n, generator=generator)[:k]
    which = torch.randint(len(flagged), (k,), generator=generator)
    images = clean.images.clone()
    for j, t in enumerate(flagged):
        sel = chosen[which == j]
        if len(sel):
            images[sel] = stamp(images[sel], triggers[t]["mask"], triggers[t]["pattern"])
    return ImageSet(images, clean.labels.clone())


@dataclass(frozen=True)
class NeuralCleanseConfig(DefenseConfig):
    """Settings of :class:`NeuralCleanse` (documented there)."""

    steps: int = setting(31_000, ge=1, hint="give the Adam steps per class")
    batch_size: int = setting(32, ge=1)
    lr: float = setting(0.1, gt=0, hint="NC uses 0.1")
    init_cost: float = setting(1e-3, ge=0, hint="NC starts at 1e-3")
    cost_multiplier: float = setting(2.0, gt=1, hint="NC uses 2")
    success_threshold: float = setting(0.99, gt=0, le=1, hint="NC uses 0.99")
    patience: int = setting(5, ge=1, hint="in epochs")
    epoch_steps: int = setting(31, ge=1, hint="NC uses 31")
    early_stop_patience: int | None = setting(25, ge=1, optional=True, hint="in epochs; None: no early stop")
    detect_images: int | None = setting(None, ge=1, optional=True, hint="None: all clean images")
    anomaly_threshold: float = setting(2.0, gt=0, hint="NC uses 2")
    unlearn_fraction: float = setting(0.2, gt=0, le=1, hint="NC stamps 0.2")
    unlearn_epochs: int = setting(2, ge=1)
    unlearn_lr: float = setting(1e-3, gt=0)
    unlearn_batch_size: int = setting(64, ge=1)


class NeuralCleanse(Defense):
    """Neural Cleanse (Wang et al., IEEE S&P 2019, https://doi.org/10.1109/SP.2019.00031).

    For every class t, :func:`reverse_engineer` finds the smallest mask/pattern trigger that sends the
    clean images to t; classes whose mask ℓ1 norm is below the median with a MAD anomaly index above
    ``anomaly_threshold`` are flagged; the model is then fine-tuned on the clean set with a fraction of the
    images stamped with a flagged class's trigger and keeping their true labels (NC's unlearning). With
    nothing flagged the model is returned unchanged. Checkpoints: ``"detect"``, then ``"unlearn epoch k"``.
    Given ``run(..., resume_dir=...)``, each class's search is kept there as it finishes, so a stopped run
    started again searches only the classes left (43 searches on GTSRB take hours on a CPU).

    The defaults are the authors' search budget (their ``visualize`` settings): up to 1000 epochs of 31
    mini-batches of 32 per class, λ patience 5 epochs, multiplier 2, early stop after 25 epochs without a
    smaller mask. That is what the paper timed (Table 6: 384.9 s on a GPU). A much cheaper search that
    still flags a BadNets target on small models is ``steps=300, epoch_steps=1, patience=10,
    early_stop_patience=None, cost_multiplier=1.5`` (one schedule decision per mini-batch).

    Args:
        steps: Adam steps (mini-batches) of trigger reverse-engineering per class, at most (default 31,000).
        batch_size: clean images per step (default 32).
        lr: Adam learning rate on the tanh-parametrised mask and pattern (default 0.1, NC's).
        init_cost: starting weight λ of the mask ℓ1 norm (default 1e-3, NC's).
        cost_multiplier: λ is multiplied / divided by this (default 2, NC's; NC divides by 2^1.5).
        success_threshold: mean attack success of an epoch counted as "trigger works" (default 0.99, NC's).
        patience: consecutive epochs above / below the threshold before λ changes (default 5, NC's).
        epoch_steps: mini-batches per epoch, the unit of the schedule (default 31 = 1000 // 32, NC's).
        early_stop_patience: epochs without a smaller successful mask before the search stops, once λ has
            been raised and lowered (default 25, NC's; None: run all ``steps``).
        detect_images: random subset of the clean set used for reverse-engineering (default None: all).
        anomaly_threshold: flag classes whose anomaly index exceeds this (default 2.0, NC's).
        unlearn_fraction: fraction of clean images stamped for unlearning (default 0.2, NC's).
        unlearn_epochs: fine-tuning epochs on the unlearning set (default 2).
        unlearn_lr: Adam learning rate of the fine-tuning (default 1e-3).
        unlearn_batch_size: fine-tuning batch size (default 64).
        seed: seeds the trigger initialisation, batch order and the stamped subset (default 0).
        device: default None (CUDA if available).

    Results: ``flagged`` (classes), ``triggers`` (``{class: {"mask": 1×H×W, "pattern": C×H×W}}``),
    ``anomaly`` (``{class: index}``), and in ``extra`` the mask norms and the attack success per class.

    >>> NeuralCleanse(steps=50, detect_images=200)
    NeuralCleanse(seed=0, device=None, steps=50, batch_size=32, lr=0.1, init_cost=0.001, cost_multiplier=2.0, success_threshold=0.99, \
patience=5, epoch_steps=31, early_stop_patience=25, detect_images=200, anomaly_threshold=2.0, unlearn_fraction=0.2, unlearn_epochs=2, unlearn_lr=0.001, \
unlearn_batch_size=64)
    """

    name = "neural_cleanse"
    label = "Neural Cleanse"
    config_class = NeuralCleanseConfig

    def __init__(self, config=None, **overrides):
        super().__init__(config, **overrides)
        if type(self.config) is not self.config_class:  # a subclass's config (TABOR's) carries other settings
            raise ValueError(f"{self.name} takes a {self.config_class.__name__}, got {type(self.config).__name__}")

    def regulariser(self) -> Regulariser | None:
        """Extra term of the reverse-engineering loss; none for Neural Cleanse (TABOR overrides this)."""
        return None

    def _run(self, model: nn.Module, clean: ImageSet, progress: bool) -> DefenseResult:
        c = self.config
        num_classes = num_classes_of(model, clean)
        pick = torch.Generator().manual_seed(c.seed)
        detect = clean
        if c.detect_images is not None and c.detect_images < len(clean):
            detect = clean.subset(torch.randperm(len(clean), generator=pick)[:c.detect_images])
        images, labels = detect.images.to(self._device), detect.labels.to(self._device)
        extra = self.regulariser()
        found: dict[int, ReversedTrigger] = {}
        for t in tqdm(range(num_classes), desc=f"{self.name}: reverse-engineer", disable=not progress, leave=False):
            def search(t: int = t) -> dict:
                return dataclasses.asdict(reverse_engineer(
                    model, images, t, labels=labels, steps=c.steps, batch_size=c.batch_size, lr=c.lr,
                    init_cost=c.init_cost, cost_multiplier=c.cost_multiplier, success_threshold=c.success_threshold,
                    patience=c.patience, epoch_steps=c.epoch_steps, early_stop_patience=c.early_stop_patience,
                    generator=torch.Generator().manual_seed(c.seed * 1_000_003 + t), extra=extra))
            # each class's search is independent and seeded alone: kept apart, a stopped run resumes per class
            found[t] = ReversedTrigger(**self.resumable(f"class_{t}", search))
        norms = [found[t].l1 for t in range(num_classes)]
        index = anomaly_index(norms)
        flagged = flag_outliers(norms, c.anomaly_threshold)
        triggers = {t: {"mask": r.mask, "pattern": r.pattern} for t, r in found.items()}
        result = DefenseResult(
            model=model, flagged=flagged, triggers=triggers,
            anomaly={t: float(index[t]) for t in range(num_classes)},
            extra={"mask_l1": {t: r.l1 for t, r in found.items()},
                   "trigger_success": {t: r.success for t, r in found.items()},
                   "threshold_reached": {t: r.reached for t, r in found.items()},
                   "steps_run": {t: r.steps_run for t, r in found.items()},
                   "detect_images": len(detect)})
        self.checkpoint(model, "detect")
        if not flagged:
            return result
        data = unlearning_set(clean, triggers, flagged, c.unlearn_fraction, pick)
        fit(self, model, data, c.unlearn_epochs, c.unlearn_lr, c.unlearn_batch_size, c.seed, progress,
            f"{self.name}: unlearn", step_prefix="unlearn epoch")
        return result
