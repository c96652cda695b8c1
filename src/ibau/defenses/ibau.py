"""I-BAU as a :class:`Defense`: a thin wrapper of :func:`ibau.unlearn.unlearn`.

Zeng et al., "Adversarial Unlearning of Backdoors via Implicit Hypergradient", ICLR 2022,
https://arxiv.org/abs/2110.03735. The configuration is :class:`ibau.unlearn.IBAUConfig` (presets:
``default``, ``reference``, ``paper``; see docs/presets.md).
"""
from __future__ import annotations

from dataclasses import fields

from torch import nn

from ..data.arrays import ImageSet
from ..unlearn import PRESETS, IBAUConfig, unlearn
from .base import Defense, DefenseResult


class IBAU(Defense):
    """Implicit Backdoor Adversarial Unlearning. Checkpoints after every round.

    >>> IBAU(rounds=1).config.rounds
    1
    """

    name = "ibau"
    label = "I-BAU"
    config_class = IBAUConfig
    presets = PRESETS

    def _run(self, model: nn.Module, clean: ImageSet, progress: bool) -> DefenseResult:
        cfg = self.config if self.config.device is not None else self.config.replace(device=str(self._device))

        def on_round(record, net, delta):
            self.checkpoint(net, record.round)

        result = unlearn(model, clean, cfg, callback=on_round, inplace=True, progress=progress)
        first = result.history[0].delta if result.history else None
        deltas = {"delta_round_1": first} if len(result.history) > 1 and first is not None else {}
        return DefenseResult(model=result.model, triggers={-1: {**deltas, "delta": result.delta}},
                             extra={"interrupted": result.interrupted, "selected_round": result.selected_round,
                                    "rounds": [_round_row(h) for h in result.history],
                                    **({} if result.suspect is None else {"suspect": result.suspect}),
                                    **({"closest_fallback": True} if result.closest_fallback else {})})


def _round_row(record) -> dict:
    """A :class:`RoundRecord` as a JSON-able row: every field but the δ tensor and the callback's extra."""
    return {f.name: getattr(record, f.name) for f in fields(record) if f.name not in ("delta", "extra")}
