"""Hidden-trigger backdoor (HT): clean-label poisons crafted in feature space; the patch is never trained on.

Saha et al., "Hidden Trigger Backdoor Attacks", AAAI 2020, https://arxiv.org/abs/1910.00033. Poisons are
target-class training images ``t`` moved by projected gradient descent (ℓ∞ radius ``eps``) so that the
reference model's features of the poison match those of a *source*-class image carrying the patch at a
random location; the poisons keep their correct (target) labels and look like target images. A model
trained on them learns to send patched source images to the target. The patch is used only at test
time: :meth:`HiddenTrigger.apply` pastes it at a seeded random location.

The collision holds in the reference model's feature space, so the victim is that model fine-tuned on
the poisoned set (Saha et al. fine-tune the last layer of a pretrained network; the I-BAU appendix
"only fine-tuned the clean model over the poison data"): ``finetune="last"`` (default) trains only the
last linear layer on top of the reference's frozen features, ``"all"`` every weight from the reference,
``"none"`` a model from scratch (where the collision does not carry over and the attack is weak).
Like Saha et al.'s victim, which fine-tunes on a small "finetune" split plus the poisons, the victim's
training set is ``finetune_size`` clean images per class plus the poisons (``0``: the whole poisoned
training set). The share of poisons matters: fine-tuning the last layer of the CPU-recipe CIFAR-10
model on all 20,000 images (800 poisons) reaches about 25% ASR, on 250 clean images per class plus the
800 poisons about 75% (docs/results.md, issue 6).

Each poison is paired with one patched source image drawn at random (the authors re-pair poisons with
their nearest patched source in feature space as they go; fixed pairs are simpler and seeded).
"""
from __future__ import annotations

import torch
from torch import nn

from .base import Trigger


class HiddenTrigger(Trigger):
    """Hidden-trigger patch and its clean-label poisons.

    Args:
        source: the class whose patched images should go to the target (default 0).
        target: target class (default 1); all-to-all is not supported (a source/target pair attack).
        patch_size: side of the square random patch (default 8). eps: ℓ∞ radius of the poisons (default
            50/255, the I-BAU paper's setting). poisons: number of poisoned target images (default 800).
        steps: PGD steps (default 200), step_size: PGD step (default 0.01), batch_size: poisons crafted
            at once (default 100). seed: seeds the patch, its positions and the pairing (default 0).
        finetune: what the victim trains, starting from the reference model: ``"last"`` (its last linear
            layer, default), ``"all"`` (every weight) or ``"none"`` (train from scratch).
        finetune_size: clean training images per class in the victim's training set, besides the
            poisons (default 250); 0 keeps the whole poisoned training set.

    Needs a reference model (``HiddenTrigger.generate(model, images)`` / ``ibau attack
    --reference-model``) whose penultimate-layer features the poisons match.
    """

    name = "ht"
    needs_reference = True
    poisoning = "craft"  # clean-label poisons (craft), kept for a resumed run
    supports_all_to_all = False

    def __init__(self, source: int = 0, patch_size: int = 8, eps: float = 50 / 255, poisons: int = 800,
                 steps: int = 200, step_size: float = 0.01, batch_size: int = 100, seed: int = 0,
                 finetune: str = "last", finetune_size: int = 250, target: int | None = 1,
                 all_to_all: bool = False):
        if all_to_all:
            raise ValueError("the hidden-trigger attack sends one source class to one target; all-to-all is not defined")
        super().__init__(target=target)
        if source == target:
            raise ValueError(f"ht source and target must differ, got {source} for both")
        if patch_size < 1 or not 0 < eps <= 1 or poisons < 1 or steps < 0 or step_size <= 0 or batch_size < 1:
            raise ValueError("ht needs patch_size >= 1, 0 < eps <= 1, poisons >= 1, steps >= 0, step_size > 0, batch_size >= 1")
        if finetune not in FINETUNE:
            raise ValueError(f"ht finetune must be one of {', '.join(FINETUNE)}; got {finetune!r}")
        if finetune_size < 0:
            raise ValueError(f"ht finetune_size is clean images per class (0: the whole training set); got {finetune_size}")
        self.finetune, self.finetune_size = finetune, int(finetune_size)
        self.source, self.patch_size, self.eps, self.poisons = int(source), int(patch_size), float(eps), int(poisons)
        self.steps, self.step_size, self.batch_size, self.seed = int(steps), float(step_size), int(batch_size), int(seed)
        self.reference: nn.Module | None = None  # set by generate(); not part of the spec

    @classmethod
    def generate(cls, model=None, images=None, seed: int = 0, **kwargs) -> HiddenTrigger:
        if model is None:
            raise ValueError("ht poisons are crafted against a reference model; pass --reference-model "
                             "(e.g. a clean model from `ibau attack --attack none`)")
        trig = cls(seed=seed, **kwargs)
        trig.reference = model.eval()
        return trig

    def patch(self, channels: int) -> torch.Tensor:
        return torch.rand(channels, self.patch_size, self.patch_size, generator=torch.Generator().manual_seed(self.seed))

    def apply(self, x: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
        """Paste the patch at a random location of each image (seeded: the same batch gets the same places)."""
        if x.dim() != 4 or x.shape[2] < self.patch_size or x.shape[3] < self.patch_size:
            raise ValueError(f"ht pastes a {self.patch_size}-pixel patch on N×C×H×W batches; got shape {tuple(x.shape)}")
        gen = generator if generator is not None else torch.Generator().manual_seed(self.seed + 1)
        n, c, h, w = x.shape
        out = x.clone()
        p = self.patch(c).to(x.device, x.dtype)
        rows = torch.randint(0, h - self.patch_size + 1, (n,), generator=gen)
        cols = torch.randint(0, w - self.patch_size + 1, (n,), generator=gen)
        for i in range(n):
            r, q = int(rows[i]), int(cols[i])
            out[i, :, r:r + self.patch_size, q:q + self.patch_size] = p
        return out

    def victims(self, y: torch.Tensor) -> torch.Tensor:
        return y == self.source

    # --- the poisons -------------------------------------------------------------------------
    def craft(self, images: torch.Tensor, labels: torch.Tensor, generator: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
        """``(indices, poisons)``: ``poisons`` target-class training images moved within ``eps`` so their
        features match patched source images; their labels stay the target's."""
        if self.reference is None:
            raise ValueError("ht poisons need the reference model; build the trigger with HiddenTrigger.generate(model, images)")
        targets = torch.nonzero(labels.eq(int(self.target or 0))).flatten()  # one-to-one only: target is set
        sources = torch.nonzero(labels == self.source).flatten()
        if len(targets) < self.poisons or len(sources) == 0:
            raise ValueError(f"ht needs {self.poisons} images of class {self.target} and some of class {self.source}; "
                             f"the training set has {len(targets)} and {len(sources)}; lower poisons=")
        chosen = targets[torch.randperm(len(targets), generator=generator)[:self.poisons]].sort().values
        pairs = sources[torch.randint(len(sources), (self.poisons,), generator=generator)]
        patched = self.apply(images[pairs], generator)
        reference = self.reference
        dev = next(reference.parameters()).device
        out = []
        for start in range(0, self.poisons, self.batch_size):
            t = images[chosen[start:start + self.batch_size]].to(dev)
            s = patched[start:start + self.batch_size].to(dev)
            out.append(self._pgd(reference, t, s).cpu())
        return chosen, torch.cat(out)

    def _pgd(self, reference: nn.Module, t: torch.Tensor, s: torch.Tensor) -> torch.Tensor:
        with torch.no_grad():
            goal = features(reference, s)
        z = t.clone()
        for _ in range(self.steps):
            z.requires_grad_(True)
            loss = (features(reference, z) - goal).square().sum(1).mean()
            (grad,) = torch.autograd.grad(loss, z)
            with torch.no_grad():
                z = z - self.step_size * grad.sign()
                z = torch.min(torch.max(z, t - self.eps), t + self.eps).clamp(0, 1)
        return z.detach()

    def _params(self) -> dict:
        return {"source": self.source, "patch_size": self.patch_size, "eps": self.eps, "poisons": self.poisons,
                "steps": self.steps, "step_size": self.step_size, "batch_size": self.batch_size, "seed": self.seed,
                "finetune": self.finetune, "finetune_size": self.finetune_size, "target": self.target}

    def victim_start(self, model: nn.Module, load_reference: bool = True) -> list[nn.Parameter]:
        """Make ``model`` (same architecture as the reference) the victim's starting point; return the
        parameters the victim trains (all of them for ``finetune="none"``). ``load_reference=False`` when
        the weights come from a checkpoint of an interrupted run."""
        if self.finetune == "none":
            return list(model.parameters())
        if load_reference:
            if self.reference is None:
                raise ValueError("ht fine-tunes the reference model; build the trigger with HiddenTrigger.generate(model, images)")
            try:
                model.load_state_dict(self.reference.state_dict())
            except RuntimeError:
                raise ValueError("ht fine-tunes the reference model, so --arch must be the reference model's architecture") from None
        return list(model.parameters() if self.finetune == "all" else _last_linear(model).parameters())

    def victim_rows(self, labels: torch.Tensor, poisoned: torch.Tensor, seed: int = 0) -> torch.Tensor | None:
        """``finetune_size`` seeded clean rows of every class plus every poisoned row (sorted); None when
        ``finetune_size`` is 0 (the whole set)."""
        if self.finetune_size == 0:
            return None
        gen = torch.Generator().manual_seed(seed)
        is_poison = torch.zeros(len(labels), dtype=torch.bool)
        is_poison[poisoned] = True
        keep = [poisoned.flatten().long()]
        for c in labels.unique():
            rows = torch.nonzero((labels == c) & ~is_poison).flatten()
            keep.append(rows[torch.randperm(len(rows), generator=gen)[:self.finetune_size]])
        return torch.cat(keep).sort().values


#: What an HT victim trains from the reference model.
FINETUNE = ("last", "all", "none")


def _last_linear(model: nn.Module) -> nn.Linear:
    last = [m for m in model.modules() if isinstance(m, nn.Linear)]
    if not last:
        raise ValueError("ht needs a reference model that ends in a linear layer (its input are the features)")
    return last[-1]


def features(model: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """The input of the model's last linear layer (its penultimate features), flattened."""
    seen: list[torch.Tensor] = []
    handle = _last_linear(model).register_forward_hook(lambda mod, inp, out: seen.append(inp[0]))
    try:
        model(x)
    finally:
        handle.remove()
    return seen[-1].flatten(1)
