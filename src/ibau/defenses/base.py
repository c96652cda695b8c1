"""The interface every defense implements.

A defense is built from a config dataclass (``Defense(config)`` or ``Defense(**overrides)``; the baselines'
configs subclass :class:`ibau.defenses.config.DefenseConfig`, which holds ``seed`` and ``device`` and checks
every setting's declared range) and run as
``defense.run(model, clean, callback=None) -> DefenseResult``. The base class owns the cross-cutting
work: it copies the model (the caller's is never modified), resolves the device, keeps the clock, and
seeds the global RNGs with ``config.seed`` for the run (restoring the caller's after), and
calls ``callback(model, seconds)`` at the defense's checkpoints (after an epoch, a round, a pruning
step) with the clock paused, so evaluation never counts as defense time. Pass
:class:`ibau.metrics.EffectMonitor` as the callback to get the time-to-effect. With ``resume_dir`` a
defense keeps its long independent parts there (:meth:`Defense.resumable`: Neural Cleanse's and TABOR's
per-class searches) and the state after each pass of its main loop (:meth:`Defense.keep_progress`: NAD's teacher
phase, SAU's rounds, FT-SAM's epochs, ANP's mask learning at each report), so a run stopped half-way and started again
continues instead of starting over.
"""
from __future__ import annotations

import copy
import dataclasses
import hashlib
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

import torch
from torch import nn

from ..data.arrays import ImageSet
from ..utils import eval_mode, resolve_device, seeded_rng

logger = logging.getLogger(__name__)

#: ``callback(model, seconds) -> dict | None``; a returned dict is stored in the history.
Callback = Callable[[nn.Module, float], Any]


@dataclass
class DefenseResult:
    """What a defense returns.

    Attributes:
        model: the sanitised model (a copy; eval mode).
        history: one dict per checkpoint: ``{"step", "seconds", **what the callback returned}``.
        seconds: wall time of the defense, callbacks excluded.
        flagged: classes a trigger-synthesis defense flagged as backdoor targets (else None).
        triggers: per class, the synthesised trigger (``{"mask", "pattern"}`` tensors or ``{"delta"}``).
        anomaly: per class anomaly index (trigger-synthesis defenses).
        time_to_effect: seconds until held-out ASR first fell below the threshold (EffectMonitor), else None.
        acc_at_effect: clean ACC at that moment.
        extra: anything else worth recording (e.g. pruned channels).
    """

    model: nn.Module
    history: list[dict[str, Any]] = field(default_factory=list)
    seconds: float = 0.0
    flagged: list[int] | None = None
    triggers: dict[int, dict[str, torch.Tensor]] | None = None
    anomaly: dict[int, float] | None = None
    time_to_effect: float | None = None
    acc_at_effect: float | None = None
    extra: dict[str, Any] = field(default_factory=dict)

    def details(self) -> dict[str, Any]:
        """``extra`` without what reports keep elsewhere (I-BAU's per-round records, the interrupt flag)."""
        return {k: v for k, v in self.extra.items() if k not in ("rounds", "interrupted")}

    def summary(self) -> dict[str, Any]:
        """JSON-able fields (tensors left out)."""
        return {"seconds": self.seconds, "flagged": self.flagged, "anomaly": self.anomaly,
                "time_to_effect": self.time_to_effect, "acc_at_effect": self.acc_at_effect,
                "history": self.history, "extra": self.extra}


class Defense:
    """Base class. Subclasses set ``name``, ``config_class`` and implement :meth:`_run`."""

    name = "defense"
    #: How reports name the method (defaults to ``name``).
    label = ""
    config_class: type = object
    #: True when the defense needs the poisoned training set rather than (only) the clean set.
    needs_training_data = False
    #: Prefix of the architecture name of the returned model when it differs from the input's
    #: (``build_model("dp:small_vgg")`` rebuilds DP-SGD's GroupNorm variant).
    arch_prefix = ""
    #: Named configurations (``ibau defend --preset``); empty: only ``"default"``, the config's defaults.
    presets: ClassVar[dict[str, Callable[..., Any]]] = {}

    @classmethod
    def preset_configs(cls) -> dict[str, Callable[..., Any]]:
        """Preset name -> config factory; without presets, ``"default"`` is the config class."""
        return cls.presets or {"default": cls.config_class}

    @classmethod
    def preset_names(cls) -> list[str]:
        return list(cls.preset_configs())

    @classmethod
    def from_options(cls, options: dict[str, Any] | None = None, preset: str = "default", seed: int = 0,
                     device: str | None = None, **data: Any) -> Defense:
        """Build the defense from a preset and ``KEY=VALUE`` settings of its config (what ``ibau defend`` and
        the grid both call). ``seed``/``device`` fill the config's fields of those names; ``data`` goes to
        the constructor (the poisoned training set of a defense with ``needs_training_data``).

        >>> from ibau.defenses import defense_class
        >>> defense_class("finetune").from_options({"epochs": 3}, seed=1).config.epochs
        3
        """
        options = dict(options or {})
        presets = cls.preset_configs()
        if preset not in presets:
            raise ValueError(f"{cls.name} has no preset {preset!r}; its presets are: {', '.join(presets)}")
        fields = {f.name for f in dataclasses.fields(cls.config_class)}
        unknown = sorted(set(options) - fields)
        if unknown:
            raise ValueError(f"{cls.name} has no setting {', '.join(unknown)}; its settings are: {', '.join(sorted(fields))}")
        given = {k: v for k, v in (("seed", seed), ("device", device)) if k in fields}
        return cls(presets[preset](**{**given, **options}), **data)

    def __init__(self, config=None, **overrides):
        if config is None:
            config = self.config_class(**overrides)
        elif overrides:
            config = dataclasses.replace(config, **overrides)
        if not isinstance(config, self.config_class):
            raise ValueError(f"{self.name} takes a {self.config_class.__name__}, got {type(config).__name__}")
        self.config = config

    def run(self, model: nn.Module, clean: ImageSet, callback: Callback | None = None,
            progress: bool = True, resume_dir: str | Path | None = None) -> DefenseResult:
        """Defend a copy of ``model`` with the clean labelled images ``clean``.

        ``resume_dir``: a folder for this one run (this model, clean set and config) where the defense keeps
        what :meth:`resumable` computes; a run started again with the same folder loads it instead of computing
        it again (default None: nothing kept). The caller deletes the folder once the result is stored."""
        if len(clean) == 0:
            raise ValueError(f"{self.name} needs clean images; the clean set is empty")
        self._device = resolve_device(getattr(self.config, "device", None))
        self._callback = callback
        self._history: list[dict[str, Any]] = []
        self._start, self._paused = time.perf_counter(), 0.0
        self._resume = None if resume_dir is None else (Path(resume_dir), _fingerprint(self, model, clean))
        self._resumed = 0
        net = copy.deepcopy(model).to(self._device)
        with seeded_rng(getattr(self.config, "seed", 0), self._device):
            result = self._run(net, clean, progress)
        if self._resumed:  # part of result.seconds was measured by an earlier process
            result.extra["resumed_parts"] = self._resumed
        result.seconds = self.elapsed()
        result.history = self._history
        result.model.eval()
        if hasattr(callback, "time_to_effect"):  # an EffectMonitor
            result.time_to_effect, result.acc_at_effect = callback.time_to_effect, callback.acc_at_effect  # type: ignore[union-attr]
        return result

    def _run(self, model: nn.Module, clean: ImageSet, progress: bool) -> DefenseResult:
        raise NotImplementedError

    # --- helpers for subclasses ----------------------------------------------------------------
    def elapsed(self) -> float:
        """Seconds since :meth:`run` started, callbacks excluded."""
        return time.perf_counter() - self._start - self._paused

    def resumable(self, key: str, compute: Callable[[], dict[str, Any]]) -> dict[str, Any]:
        """``compute()``, a dict of tensors and numbers, kept as ``resume_dir/<key>.pt`` when :meth:`run` was
        given a ``resume_dir``: a run started again loads it (``torch.load(weights_only=True)``: no code runs)
        instead of computing it, and the seconds it took then count towards this run's clock. A file kept
        by another model, clean set or config is never used: it is computed again (and replaced), with a
        warning."""
        if self._resume is None:
            return compute()
        folder, fingerprint = self._resume
        path = folder / f"{key}.pt"
        if path.exists():
            saved = torch.load(path, weights_only=True)
            if saved.get("fingerprint") == fingerprint:
                self._start -= saved["seconds"]
                self._resumed += 1
                return saved["value"]
            logger.warning(f"{path} was kept by another run (model, clean set or settings differ); computing it again")
        t0 = self.elapsed()
        value = compute()
        folder.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(".tmp")  # written whole, then renamed: a stop mid-write leaves no half file
        torch.save({"value": value, "seconds": self.elapsed() - t0, "fingerprint": fingerprint}, tmp)
        tmp.replace(path)
        return value

    def keep_progress(self, key: str, done: int, state: Callable[[], dict[str, Any]]) -> None:
        """After the ``done``-th pass of a defense's main loop (an epoch, a round; its checkpoint taken), keep what
        a run started again needs to continue from there, as ``resume_dir/<key>.pt`` (replaced whole each time):
        ``state()`` (the defense's weights, optimiser and generator states: tensors, numbers, lists and dicts),
        with the history so far, the global torch RNG states and the clock. Nothing happens without a
        ``resume_dir``. :meth:`kept_progress` reads it back."""
        if self._resume is None:
            return
        folder, fingerprint = self._resume
        folder.mkdir(parents=True, exist_ok=True)
        path = folder / f"{key}.pt"
        tmp = path.with_suffix(".tmp")  # written whole, then renamed: a stop mid-write keeps the previous pass
        torch.save({"done": done, "state": state(), "history": self._history, "rng": _rng_states(self._device),
                    "seconds": self.elapsed(), "fingerprint": fingerprint}, tmp)
        tmp.replace(path)

    def kept_progress(self, key: str) -> tuple[int, dict[str, Any] | None]:
        """``(passes done, state)`` of :meth:`keep_progress`, or ``(0, None)`` with nothing kept for this run (no
        ``resume_dir``, no file, or one kept by another model, clean set or config: then with a warning). On a
        hit the history, the global RNG states and the clock are those of the moment it was kept, and the
        callback is replayed the history (``callback.replay(entry)`` where it has one: an EffectMonitor's time
        to effect), so the run goes on as if it had not stopped; the defense restores ``state`` itself."""
        if self._resume is None:
            return 0, None
        folder, fingerprint = self._resume
        path = folder / f"{key}.pt"
        if not path.exists():
            return 0, None
        saved = torch.load(path, weights_only=True)
        if saved.get("fingerprint") != fingerprint:
            logger.warning(f"{path} was kept by another run (model, clean set or settings differ); starting over")
            return 0, None
        self._history = list(saved["history"])
        replay = getattr(self._callback, "replay", None)
        if replay is not None:
            for entry in self._history:
                replay(entry)
        _set_rng_states(saved["rng"], self._device)
        self._start, self._paused = time.perf_counter() - saved["seconds"], 0.0
        self._resumed += 1
        logger.info(f"{self.name}: continuing after pass {saved['done']} kept in {path}")
        return int(saved["done"]), saved["state"]

    def checkpoint(self, model: nn.Module, step: Any, measure: bool = True) -> None:
        """Report progress to the callback with the clock paused; recorded in the history.

        ``measure=False`` records the time only: for intermediate models that are not the defense's
        output (e.g. NAD's teacher), which must not count towards the time to effect.
        """
        seconds = self.elapsed()
        entry: dict[str, Any] = {"step": step, "seconds": seconds}
        if self._callback is not None and measure:
            t0 = time.perf_counter()
            was_training = model.training
            answer = self._callback(model, seconds)
            model.train(was_training)
            self._paused += time.perf_counter() - t0
            if isinstance(answer, dict):
                entry.update(answer)
        self._history.append(entry)

    @property
    def title(self) -> str:
        return self.label or self.name

    def __repr__(self) -> str:
        fields = ", ".join(f"{f.name}={getattr(self.config, f.name)!r}" for f in dataclasses.fields(self.config))
        return f"{type(self).__name__}({fields})"


def _rng_states(device: torch.device) -> list[torch.Tensor]:
    """The global torch RNG states a defense draws from (dropout, random starts): the CPU's, and the device's
    when it is CUDA."""
    return [torch.get_rng_state()] + ([torch.cuda.get_rng_state(device)] if device.type == "cuda" else [])


def _set_rng_states(states: list[torch.Tensor], device: torch.device) -> None:
    torch.set_rng_state(states[0])
    if device.type == "cuda" and len(states) > 1:
        torch.cuda.set_rng_state(states[1], device)


def _fingerprint(defense: Defense, model: nn.Module, clean: ImageSet) -> str:
    """What a kept part depends on: the defense's settings and a hash of the bytes of the model's weights and
    buffers and of the clean set (exact, and the same on every machine, unlike a floating-point sum)."""
    digest = hashlib.blake2b(repr(defense).encode(), digest_size=16)
    for t in (*model.state_dict().values(), clean.images, clean.labels):
        digest.update(t.detach().cpu().contiguous().reshape(-1).view(torch.uint8).numpy().tobytes())
    return digest.hexdigest()


def num_classes_of(model: nn.Module, clean: ImageSet) -> int:
    """Output width of ``model`` (probed on one clean image)."""
    dev = next(model.parameters()).device
    with eval_mode(model), torch.no_grad():
        return int(model(clean.images[:1].to(dev)).shape[1])
