"""The naive baseline of the I-BAU paper (§4): adversarial training with universal adversarial perturbations.

Zeng et al., "Adversarial Unlearning of Backdoors via Implicit Hypergradient", ICLR 2022, §4 and Fig. 1,
https://arxiv.org/abs/2110.03735: alternate an off-the-shelf universal perturbation (Moosavi-Dezfooli,
Fawzi, Fawzi and Frossard, "Universal adversarial perturbations", CVPR 2017,
https://arxiv.org/abs/1610.08401) with fine-tuning on the perturbed clean images. The paper shows it is
unstable; this implementation does not try to fix that.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn
from tqdm.auto import tqdm

from ..data.arrays import ImageSet
from ..training import train_classifier
from ..unlearn.inner import project
from .base import Defense, DefenseResult
from .config import DefenseConfig, setting


@dataclass(frozen=True)
class UAPATConfig(DefenseConfig):
    """Options of :class:`UAPAdversarialTraining`.

    Universal perturbation (Moosavi-Dezfooli et al.'s Algorithm 1, ℓ2):
        norm_bound: radius ξ of the ℓ2 ball δ is projected onto (default 10.0, I-BAU's Cδ).
        target_fooling_rate: stop a round's search once this fraction of the images change prediction
            (default 0.8, the paper's 1 − δ with δ = 0.2).
        max_passes: at most this many passes over the images per round (default 5).
        uap_samples: images the search iterates over, a seeded draw from the clean set (default None:
            all of them; the paper used 10,000 ImageNet images).
        deepfool_steps: DeepFool iterations per image (default 10, the authors' code ``max_iter_df``).
        overshoot: DeepFool overshoot (default 0.02).
        num_candidates: DeepFool considers this many top classes (default 10, the authors' code).
    Fine-tuning on x + δ:
        epochs_per_round: fine-tuning epochs per round (default 1); Adam is restarted every round.
        perturb_fraction: fraction of the clean images that carry δ in a round's fine-tuning, drawn anew
            each round (default 1.0: all, as adversarial training; I-BAU's outer step uses 0.01).
        lr: Adam learning rate (default 1e-4, as :class:`FineTune`); batch_size: (default 128).
    Run:
        rounds: number of (δ, fine-tune) rounds (default 5).
        seed: seeds the image order, the draws, the batch order and dropout masks (default 0).
        device: ``None`` uses CUDA when available.
    """

    rounds: int = setting(5, ge=1)
    norm_bound: float = setting(10.0, gt=0, hint="I-BAU uses 10")
    target_fooling_rate: float = setting(0.8, gt=0, le=1, hint="e.g. 0.8")
    max_passes: int = setting(5, ge=1)
    uap_samples: int | None = setting(None, ge=1, optional=True, hint="None: all clean images")
    deepfool_steps: int = setting(10, ge=1)
    overshoot: float = setting(0.02, ge=0, hint="e.g. 0.02")
    num_candidates: int = setting(10, ge=2, hint="the true class and at least one other")
    epochs_per_round: int = setting(1, ge=1)
    perturb_fraction: float = setting(1.0, gt=0, le=1, hint="1.0 perturbs every image")
    lr: float = setting(1e-4, gt=0, hint="e.g. 1e-4")
    batch_size: int = setting(128, ge=1)


def deepfool(model: nn.Module, point: torch.Tensor, label: int, num_candidates: int = 10, steps: int = 10,
             overshoot: float = 0.02) -> tuple[torch.Tensor, bool]:
    """ℓ2 DeepFool (Moosavi-Dezfooli et al., CVPR 2016) on one C×H×W image, without clipping.

    Returns ``(r, fooled)``: the perturbation (1 + overshoot)·Σ r_i and whether ``point + r`` leaves
    ``label``. The gradients of the candidate logits come from one batched backward pass per step (the
    image repeated once per candidate); ``model`` must be in eval mode.
    """
    with torch.no_grad():
        logits = model(point.unsqueeze(0))[0]
    k = min(num_candidates, logits.numel())
    others = [int(i) for i in logits.topk(k).indices if int(i) != label][:k - 1]
    cand = torch.tensor(others, device=point.device)
    rows = torch.arange(len(others), device=point.device)
    r_tot = torch.zeros_like(point)
    for _ in range(steps):
        x = (point + (1 + overshoot) * r_tot).unsqueeze(0).repeat(len(others), 1, 1, 1).requires_grad_(True)
        out = model(x)
        if int(out[0].argmax()) != label:
            return (1 + overshoot) * r_tot, True
        f = out[rows, cand] - out[:, label]
        (w,) = torch.autograd.grad(f.sum(), x)
        w = w.flatten(1)
        f = f.detach()
        w_norm = w.norm(dim=1) + 1e-8
        best = int((f.abs() / w_norm).argmin())
        r_tot = r_tot + ((f[best].abs() + 1e-4) / w_norm[best] ** 2 * w[best]).view_as(point)
    with torch.no_grad():
        fooled = int(model((point + (1 + overshoot) * r_tot).unsqueeze(0)).argmax()) != label
    return (1 + overshoot) * r_tot, fooled


def _predict(model: nn.Module, x: torch.Tensor) -> torch.Tensor:
    with torch.no_grad():
        return torch.cat([model(x[i:i + 512]).argmax(1) for i in range(0, len(x), 512)])


def universal_perturbation(model: nn.Module, images: torch.Tensor, cfg: UAPATConfig, generator: torch.Generator,
                           progress: bool = False) -> tuple[torch.Tensor, list[float]]:
    """Moosavi-Dezfooli et al.'s Algorithm 1 on ``images`` (already on the model's device), ℓ2 ball.

    δ = 0; each pass visits the images in a seeded random order; an image still classified as on its
    clean version (``clamp(x + δ, 0, 1)``) gets the DeepFool perturbation r of ``clamp(x + δ, 0, 1)``, and
    δ ← Proj(δ + r) when DeepFool succeeded within its steps. Stops when the fooling rate (fraction of
    images whose prediction differs from the clean one) reaches ``target_fooling_rate`` or after
    ``max_passes``. Returns ``(δ, fooling rate after each pass)``.
    """
    model.eval()
    clean_pred = _predict(model, images)
    delta = torch.zeros(images.shape[1:], device=images.device)
    rates: list[float] = []
    for _ in range(cfg.max_passes):
        order = torch.randperm(len(images), generator=generator).tolist()
        for i in tqdm(order, desc="uap_at: δ", disable=not progress, leave=False):
            point = (images[i] + delta).clamp(0, 1)
            with torch.no_grad():
                still = int(model(point.unsqueeze(0)).argmax()) == int(clean_pred[i])
            if still:
                r, ok = deepfool(model, point, int(clean_pred[i]), cfg.num_candidates, cfg.deepfool_steps,
                                 cfg.overshoot)
                if ok:
                    delta = project(delta + r, "l2", cfg.norm_bound)
        rates.append(float((_predict(model, (images + delta).clamp(0, 1)) != clean_pred).float().mean()))
        if rates[-1] >= cfg.target_fooling_rate:
            break
    return delta, rates


class UAPAdversarialTraining(Defense):
    """The naive minimax heuristic of the I-BAU paper §4 (https://arxiv.org/abs/2110.03735): per round,
    (a) a universal perturbation δ (:func:`universal_perturbation`, Moosavi-Dezfooli et al., CVPR 2017,
    https://arxiv.org/abs/1610.08401; per-image ℓ2 DeepFool, δ projected on the ball of radius
    ``norm_bound``), then (b) ``epochs_per_round`` epochs of Adam fine-tuning on ``clamp(x + δ, 0, 1)``
    with the true labels (``perturb_fraction`` of the images perturbed). δ restarts from 0 every round.
    Checkpoints ``"round k"``. Unstable by nature (paper Fig. 1).

    ``DefenseResult.triggers = {-1: {"delta": δ}}`` (the last round's δ, C×H×W, on the CPU);
    ``extra``: ``fooling_rates`` (final fooling rate of each round's δ), ``rounds`` (per round: the
    fooling rate after each pass, δ's ℓ2 norm).

    >>> UAPAdversarialTraining(rounds=2, uap_samples=100).config.norm_bound
    10.0
    """

    name = "uap_at"
    label = "UAP adversarial training"
    config_class = UAPATConfig

    def _run(self, model: nn.Module, clean: ImageSet, progress: bool) -> DefenseResult:
        c = self.config
        dev = self._device
        gen = torch.Generator().manual_seed(c.seed)
        images, labels = clean.images.to(dev), clean.labels
        fooling, records = [], []
        delta = torch.zeros(clean.shape, device=dev)
        for rnd in range(c.rounds):
            subset = images
            if c.uap_samples is not None and c.uap_samples < len(images):
                subset = images[torch.randperm(len(images), generator=gen)[:c.uap_samples].to(dev)]
            delta, rates = universal_perturbation(model, subset, c, gen, progress)
            fooling.append(rates[-1])
            records.append({"round": rnd + 1, "passes": rates, "delta_norm": float(delta.norm())})

            n_pert = max(1, round(c.perturb_fraction * len(clean)))
            chosen = torch.randperm(len(clean), generator=gen)[:n_pert]
            x = clean.images.clone()
            x[chosen] = (x[chosen] + delta.cpu()).clamp(0, 1)
            train_classifier(model, ImageSet(x, labels), epochs=c.epochs_per_round, lr=c.lr,
                             batch_size=c.batch_size, seed=c.seed + rnd, device=str(dev), progress=progress,
                             desc=f"uap_at: round {rnd + 1}")
            self.checkpoint(model, f"round {rnd + 1}")
        return DefenseResult(model=model.eval(), triggers={-1: {"delta": delta.detach().cpu()}},
                             extra={"fooling_rates": fooling, "rounds": records})
