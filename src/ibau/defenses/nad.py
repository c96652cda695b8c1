"""Neural Attention Distillation: fine-tune a teacher, then distil its attention into the backdoored model.

Li, Lyu, Koren, Lyu, Li and Ma, "Neural Attention Distillation: Erasing Backdoor Triggers from Deep
Neural Networks", ICLR 2021, https://arxiv.org/abs/2101.05930 (authors' code:
https://github.com/bboylyg/NAD). Setting of the I-BAU paper (SPEC §3): K3 = K4 = 20 epochs.
"""
from __future__ import annotations

import copy
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn
from tqdm.auto import tqdm

from ..data.arrays import ImageSet
from ..training import iterate_batches
from .base import Defense, DefenseResult
from .config import DefenseConfig, setting
from .fine_pruning import conv_sites

_OPTIMIZERS = ("sgd", "adam")
_DISTANCES = ("mse", "l2")


@dataclass(frozen=True)
class NADConfig(DefenseConfig):
    """Options of :class:`NAD`.

    Epochs:
        teacher_epochs: K3, epochs of plain fine-tuning of a copy: the teacher (default 20, the I-BAU
            paper's setting). As the authors, with the student's optimizer and learning rate and β = 0.
        student_epochs: K4, epochs on CE + Σ β_l · AT_l for the backdoored model itself (default 20).
    Distillation:
        betas: one β per distilled layer, lowest layer first (default (500.0, 1000.0, 1000.0): the
            authors' code for its three WRN groups; the paper quotes β = 5000 for CIFAR-10, which the
            code's latest version puts on the last group only, i.e. ``betas=(0, 0, 5000)``).
        p: attention power, map = mean over channels of |a|^p (default 2.0).
        distance: ``"mse"`` (default): mean over batch and positions of the squared difference of the
            L2-normalised maps, as the authors' code (``F.mse_loss``), which the betas above are scaled for;
            ``"l2"``: the paper's equation, ‖a_s − a_t‖₂ per image, mean over the batch.
        layers: module names whose outputs are distilled (default None: automatic, see :class:`NAD`);
            must have as many entries as ``betas``. Tuple fields also take a comma-separated string.
    Optimisation (both phases, each with a fresh optimizer):
        optimizer: ``"sgd"`` (default: Nesterov, momentum 0.9, weight decay 1e-4, as the authors) or
            ``"adam"`` (no weight decay).
        lr: learning rate (default 0.01, the authors' rate from their third epoch on; their first two
            epochs use 0.1, which took the small VGG on the digits to 8% ACC after one epoch).
        lr_decay_epochs: epochs after which the learning rate is multiplied by 0.1 (default ()).
        batch_size: (default 64, as the authors).
        seed: batch order and dropout masks (default 0); device: ``None`` uses CUDA when available.
    """

    teacher_epochs: int = setting(20, ge=0)
    student_epochs: int = setting(20, ge=1)
    betas: tuple[float, ...] = setting((500.0, 1000.0, 1000.0), test=lambda b: len(b) > 0 and all(x >= 0 for x in b),
                                       must="one or more non-negative weights", hint="e.g. (500, 1000, 1000)")
    p: float = setting(2.0, gt=0, hint="the paper uses 2")
    distance: str = setting("mse", choices=_DISTANCES)
    layers: tuple[str, ...] | None = None
    optimizer: str = setting("sgd", choices=_OPTIMIZERS)
    lr: float = setting(0.01, gt=0, hint="e.g. 0.01")
    lr_decay_epochs: tuple[int, ...] = ()
    batch_size: int = setting(64, ge=1)

    def __post_init__(self):
        try:  # tuples, lists, one number, or "a,b,c" (ibau defend --defense-option betas=500,1000,1000)
            object.__setattr__(self, "betas", tuple(float(b) for b in _items(self.betas)))
            object.__setattr__(self, "lr_decay_epochs", tuple(int(e) for e in _items(self.lr_decay_epochs)))
        except (TypeError, ValueError):
            raise ValueError(f"{type(self).__name__}: betas must be numbers and lr_decay_epochs whole numbers, got betas={self.betas!r}, "
                             f"lr_decay_epochs={self.lr_decay_epochs!r}; e.g. betas=(500, 1000, 1000)") from None
        if self.layers is not None:
            object.__setattr__(self, "layers", tuple(str(n) for n in _items(self.layers)))
        super().__post_init__()
        if self.layers is not None and len(self.layers) != len(self.betas):
            raise ValueError(f"{type(self).__name__}: {len(self.layers)} layers but {len(self.betas)} betas; give one beta per layer")


def _items(value) -> list:
    if isinstance(value, str):
        return [v.strip() for v in value.split(",") if v.strip()]
    if isinstance(value, (int, float)):
        return [value]
    return list(value)


def attention_map(features: torch.Tensor, p: float = 2.0, eps: float = 1e-6) -> torch.Tensor:
    """N×C×H×W -> N×(H·W): mean over channels of |a|^p, flattened and L2-normalised per image."""
    am = features.abs().pow(p).mean(1).flatten(1)
    return am / (am.norm(dim=1, keepdim=True) + eps)


def at_loss(student: torch.Tensor, teacher: torch.Tensor, p: float = 2.0, distance: str = "mse") -> torch.Tensor:
    """Attention-transfer loss between two feature maps (see :class:`NADConfig` ``distance``)."""
    diff = attention_map(student, p) - attention_map(teacher, p)
    return diff.pow(2).mean() if distance == "mse" else diff.norm(dim=1).mean()


def default_layers(model: nn.Module, sample: torch.Tensor, count: int) -> list[str]:
    """The outputs of the model's last ``count`` conv stages: for each spatial size of the conv features
    (in execution order) the feature of the last conv at that size (after its BatchNorm and activation
    when they directly follow, see :class:`ibau.defenses.fine_pruning.ConvSite`); the last ``count`` of
    those. With fewer stages than ``count``, the last ``count`` conv features."""
    sites = conv_sites(model, sample)
    if not sites:
        raise ValueError("nad needs a model with nn.Conv2d layers to distil attention from; this model has none")
    last_at: dict[tuple[int, ...], str] = {}
    for site in sites:
        size = site.shape[1:]
        last_at.pop(size, None)  # re-insert so the order is that of each size's last conv
        last_at[size] = site.feature_name
    stages = list(last_at.values())
    if len(stages) < count:
        stages = list(dict.fromkeys(s.feature_name for s in sites))
    if len(stages) < count:
        raise ValueError(f"nad: the model has {len(stages)} conv features but {count} betas; pass fewer betas")
    return stages[-count:]


class _Features:
    """Forward hooks collecting the outputs of named modules."""

    def __init__(self, model: nn.Module, names: list[str]):
        modules = dict(model.named_modules())
        missing = [n for n in names if n not in modules]
        if missing:
            raise ValueError(f"nad: no module named {missing[0]!r} in the model; pick layers from model.named_modules()")
        self.out: dict[str, torch.Tensor] = {}
        self.handles = [modules[n].register_forward_hook(self._hook(n)) for n in names]
        self.names = names

    def _hook(self, name):
        def hook(module, inputs, output):
            self.out[name] = output
        return hook

    def take(self) -> list[torch.Tensor]:
        feats = [self.out[n] for n in self.names]
        self.out = {}
        return feats

    def remove(self):
        for h in self.handles:
            h.remove()


class NAD(Defense):
    """Neural Attention Distillation (Li et al., ICLR 2021, https://arxiv.org/abs/2101.05930).

    1. Teacher: a copy of the backdoored model fine-tuned on the clean set for ``teacher_epochs`` with
       cross-entropy only (the authors' recipe: their NAD training with β = 0); checkpoints
       ``"teacher epoch k"`` are timed but not evaluated (the teacher is not the output, so it cannot
       count towards the time to effect).
    2. Student: the backdoored model, trained for ``student_epochs`` on CE + Σ_l β_l · AT(a_s^l, a_t^l)
       with a fresh optimizer, teacher frozen in eval mode, student in train mode; checkpoints
       ``"epoch k"``.

    Distilled layers (default): the outputs of the last ``len(betas)`` conv stages (see
    :func:`default_layers`); for the small VGG, the ELU after the second conv of each of its three
    blocks, the analogue of the authors' three WRN group outputs. No data augmentation (the authors
    use random crops and flips).

    ``DefenseResult.extra``: ``layers`` (names), ``teacher_losses`` (mean CE per teacher epoch),
    ``student_losses`` (mean CE and β-weighted AT per student epoch).

    >>> NAD(teacher_epochs=2, student_epochs=2).config.betas
    (500.0, 1000.0, 1000.0)
    """

    name = "nad"
    label = "NAD"
    config_class = NADConfig

    def _run(self, model: nn.Module, clean: ImageSet, progress: bool) -> DefenseResult:
        c = self.config
        layers = list(c.layers) if c.layers is not None else \
            default_layers(model, clean.images[:2].to(self._device), len(c.betas))
        teacher = copy.deepcopy(model)
        teacher_losses = self._teacher(teacher, layers, clean, progress)
        teacher.eval()
        for param in teacher.parameters():
            param.requires_grad_(False)
        student_losses = self._train(model, teacher, layers, clean, c.student_epochs, progress, "epoch")
        return DefenseResult(model=model.eval(), extra={"layers": layers, "teacher_losses": teacher_losses,
                                                        "student_losses": student_losses})

    def _teacher(self, teacher: nn.Module, layers: list[str], clean: ImageSet, progress: bool) -> list[dict[str, float]]:
        """Fine-tune ``teacher`` in place (phase 1) and return its losses. The phase is kept whole in the run's
        ``resume_dir`` (:meth:`Defense.keep_progress`): a run stopped in the student phase and started again loads
        the teacher's weights, its timed checkpoints and the global RNG state it ended with (dropout draws from
        it), and the student phase then runs as in an uninterrupted run."""
        _, kept = self.kept_progress("teacher")
        if kept is not None:
            teacher.load_state_dict(kept["state"])
            return kept["losses"]
        losses = self._train(teacher, None, layers, clean, self.config.teacher_epochs, progress, "teacher epoch")
        self.keep_progress("teacher", 1, lambda: {"state": teacher.state_dict(), "losses": losses})
        return losses

    def _train(self, model: nn.Module, teacher: nn.Module | None, layers: list[str], clean: ImageSet,
               epochs: int, progress: bool, label: str) -> list[dict[str, float]]:
        """``epochs`` of CE (+ Σ β·AT towards ``teacher`` when given); a checkpoint after each epoch."""
        c, dev = self.config, self._device
        opt: torch.optim.Optimizer
        if c.optimizer == "sgd":
            opt = torch.optim.SGD(model.parameters(), lr=c.lr, momentum=0.9, weight_decay=1e-4, nesterov=True)
        else:
            opt = torch.optim.Adam(model.parameters(), lr=c.lr)
        hooks = [_Features(teacher, layers), _Features(model, layers)] if teacher is not None else []
        gen = torch.Generator().manual_seed(c.seed + (teacher is not None))
        steps = epochs * ((len(clean) + c.batch_size - 1) // c.batch_size)
        bar = tqdm(total=steps, desc=f"nad: {'student' if teacher is not None else 'teacher'}",
                   disable=not progress, leave=False)
        losses: list[dict[str, float]] = []
        try:
            for epoch in range(epochs):
                for group in opt.param_groups:
                    group["lr"] = c.lr * 0.1 ** sum(epoch >= e for e in c.lr_decay_epochs)
                model.train()
                ce_sum = at_sum = 0.0
                for x, y in iterate_batches(clean.images, clean.labels, c.batch_size, gen):
                    x, y = x.to(dev), y.to(dev)
                    loss = ce = F.cross_entropy(model(x), y)
                    if teacher is not None:
                        student_feats = hooks[1].take()
                        with torch.no_grad():
                            teacher(x)
                        at = sum(beta * at_loss(s, t, c.p, c.distance)
                                 for beta, s, t in zip(c.betas, student_feats, hooks[0].take()))
                        loss = ce + at
                        at_sum += float(at.detach()) * len(y)
                    opt.zero_grad(set_to_none=True)
                    loss.backward()
                    opt.step()
                    ce_sum += float(ce.detach()) * len(y)
                    bar.update(1)
                losses.append({"ce": ce_sum / len(clean)} | ({"at": at_sum / len(clean)} if teacher is not None else {}))
                bar.set_postfix({k: f"{v:.3f}" for k, v in losses[-1].items()})
                model.eval()
                # the teacher is not the defense's output: its epochs are timed, not measured
                self.checkpoint(model, f"{label} {epoch + 1}", measure=teacher is not None)
        finally:
            bar.close()
            for h in hooks:
                h.remove()
        return losses
