"""The base of the defenses' config dataclasses: ``seed`` and ``device`` once, and declarative checks.

A setting states what it accepts on its field (:func:`setting`: bounds, choices, ``None`` allowed or a
test of its own); :class:`DefenseConfig` checks every field in one ``__post_init__`` and refuses a bad
value with one line that names the class, the setting, the rule, the value and the fix:

>>> @dataclass(frozen=True)
... class Example(DefenseConfig):
...     epochs: int = setting(10, ge=1)
...     lr: float = setting(1e-4, gt=0, hint="e.g. 1e-4")
>>> Example(epochs=2)
Example(seed=0, device=None, epochs=2, lr=0.0001)
>>> Example(lr=0)
Traceback (most recent call last):
ValueError: Example: lr must be > 0, got 0; e.g. 1e-4

A subclass with checks across fields (or values to normalise first) overrides ``__post_init__`` and
calls ``super().__post_init__()``.
"""
from __future__ import annotations

import dataclasses
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

#: The key of a field's metadata that holds its :class:`Rule`.
RULE = "rule"


@dataclass(frozen=True)
class Rule:
    """What a setting accepts: a value within the bounds given (``ge`` >=, ``gt`` >, ``le`` <=, ``lt`` <),
    one of ``choices``, or one ``test`` accepts (described by ``must``); ``None`` when ``optional``.
    ``hint`` ends the error message (an example, or what the extremes mean)."""

    ge: float | None = None
    gt: float | None = None
    le: float | None = None
    lt: float | None = None
    choices: tuple[str, ...] = ()
    optional: bool = False
    test: Callable[[Any], bool] | None = None
    must: str = ""
    hint: str = ""

    def accepts(self, value: Any) -> bool:
        if value is None:
            return self.optional
        try:
            if self.test is not None:
                return bool(self.test(value))
            if self.choices:
                return value in self.choices
            # written so that NaN fails every bound
            return ((self.ge is None or value >= self.ge) and (self.gt is None or value > self.gt)
                    and (self.le is None or value <= self.le) and (self.lt is None or value < self.lt))
        except TypeError:  # a value of the wrong kind, e.g. a string where a number belongs
            return False

    def describe(self) -> str:
        """``"> 0"``, ``"in (0, 1]"``, ``"one of rdp, prv, gdp"``, ``">= 1 or None"``..."""
        low = self.ge if self.ge is not None else self.gt
        high = self.le if self.le is not None else self.lt
        if self.must:
            text = self.must
        elif self.choices:
            text = "one of " + ", ".join(self.choices)
        elif low is not None and high is not None:
            text = f"in {'[' if self.ge is not None else '('}{low}, {high}{']' if self.le is not None else ')'}"
        else:
            bounds = ((">=", self.ge), (">", self.gt), ("<=", self.le), ("<", self.lt))
            text = " and ".join(f"{op} {v}" for op, v in bounds if v is not None) or "anything"
        return f"{text} or None" if self.optional else text

    def check(self, owner: str, name: str, value: Any) -> None:
        """Raise ``ValueError("<owner>: <name> must be <rule>, got <value>; <hint>")`` unless accepted."""
        if not self.accepts(value):
            hint = f"; {self.hint}" if self.hint else ""
            raise ValueError(f"{owner}: {name} must be {self.describe()}, got {value!r}{hint}")


def setting(default: Any, *, ge: float | None = None, gt: float | None = None, le: float | None = None,
            lt: float | None = None, choices: tuple[str, ...] = (), optional: bool = False,
            test: Callable[[Any], bool] | None = None, must: str = "", hint: str = "") -> Any:
    """A config field with its default and its :class:`Rule`, e.g. ``lr: float = setting(0.1, gt=0)``."""
    rule = Rule(ge=ge, gt=gt, le=le, lt=lt, choices=choices, optional=optional, test=test, must=must, hint=hint)
    return field(default=default, metadata={RULE: rule})


@dataclass(frozen=True, kw_only=True)
class DefenseConfig:
    """The base of a defense's settings (frozen; subclasses add their fields with :func:`setting`).

    Args:
        seed: seeds the defense's randomness (default 0); :meth:`ibau.defenses.Defense.run` also seeds the
            global RNGs with it for the run.
        device: ``None`` (default) uses CUDA when available.

    ``seed`` and ``device`` are keyword-only, so a subclass's own fields keep their positions.
    """

    seed: int = 0
    device: str | None = None

    def __post_init__(self) -> None:
        for f in dataclasses.fields(self):
            rule = f.metadata.get(RULE)
            if rule is not None:
                rule.check(type(self).__name__, f.name, getattr(self, f.name))

    @classmethod
    def rules(cls) -> dict[str, Rule]:
        """Setting name -> its rule, for the settings that have one."""
        return {f.name: f.metadata[RULE] for f in dataclasses.fields(cls) if RULE in f.metadata}
