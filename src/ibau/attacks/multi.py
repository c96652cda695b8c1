"""Multi-trigger attacks: several triggers in one model, each sent to its own target.

The I-BAU paper's 7-trigger-7-target setting (its Table 3) is :data:`PAPER_SEVEN`.
"""
from __future__ import annotations

import torch

from .base import Trigger

#: The paper's 7-trigger-7-target set (SPEC §2): trigger name -> target class.
PAPER_SEVEN: dict[str, int] = {"trojan_wm": 9, "trojan_sq": 2, "badnets": 0, "smooth": 1, "blend": 3,
                               "l0_inv": 4, "l2_inv": 5}


class MultiTrigger(Trigger):
    """Several single triggers at once; poisoning stamps each chosen image with one of them.

    Args:
        triggers: the component triggers (or their specs), each with its own target.

    ASR is measured per component and averaged (SPEC §4). :meth:`apply` stamps every component in
    turn, which is only meant for pictures.

    >>> from ibau.attacks import BadNets, Blend
    >>> multi = MultiTrigger([BadNets(target=0), Blend(target=3)])
    >>> [t.target for t in multi.components()]
    [0, 3]
    """

    name = "multi"

    def __init__(self, triggers: list):
        from . import make_trigger

        parts = [make_trigger(**t) if isinstance(t, dict) else t for t in triggers]
        if len(parts) < 2:
            raise ValueError("a multi-trigger attack needs at least two triggers")
        if any(isinstance(t, MultiTrigger) for t in parts):
            raise ValueError("multi-triggers cannot be nested; list the single triggers")
        self.parts = parts
        self.target, self.all_to_all = None, False
        self.needs_reference = any(t.needs_reference for t in parts)
        # crafted poisons make the set crafted (kept for a resumed run); the other parts are stamped, an
        # input-aware one with its networks as they are
        self.poisoning = "craft" if any(t.poisoning == "craft" for t in parts) else "stamp"

    def components(self) -> list[Trigger]:
        return list(self.parts)

    def apply(self, x: torch.Tensor) -> torch.Tensor:
        for t in self.parts:
            x = t.apply(x)
        return x

    def target_labels(self, y: torch.Tensor, num_classes: int) -> torch.Tensor:
        raise ValueError("a multi-trigger has one target per component; measure each of components()")

    def victims(self, y: torch.Tensor) -> torch.Tensor:
        raise ValueError("a multi-trigger has one target per component; measure each of components()")

    def spec(self) -> dict:
        return {"name": self.name, "triggers": [t.spec() for t in self.parts]}

    def __repr__(self) -> str:
        return f"MultiTrigger([{', '.join(f'{t.name}->{t.target}' for t in self.parts)}])"
