"""The I-BAU round loop: :func:`unlearn`."""
from __future__ import annotations

import contextlib
import copy
import functools
import itertools
import logging
import math
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn
from tqdm.auto import tqdm

from ..data.arrays import check_images, check_labels
from ..training import augment_images, cycle_batches, iterate_batches
from ..utils import eval_mode, resolve_device
from . import distributed
from .blend import also_classes, blend, blend_trigger
from .config import IBAUConfig
from .distributed import SINGLE, Ranks
from .guard import guard_split, restore_optimizers, scale_step
from .hypergrad import implicit_hypergradient
from .inner import OutlierStamp, class_patch, class_stamps, delta_patch, objective, perturb, solve_delta, stamp_rate
from .probe import probe_rate, suspect_class
from .smooth import smooth_trigger
from .solvers import SolveStats

logger = logging.getLogger(__name__)
#: clean images on which each round's δ is scored for the fooling-rate diagnostic
FOOLING_SAMPLE = 1000


@dataclass
class RoundRecord:
    """What happened in one round. ``extra`` holds whatever the callback returned (e.g. ACC/ASR)."""

    round: int
    inner_loss: float   # mean H(δ, θ) over the ascent steps
    outer_loss: float   # mean L_out over the θ steps
    delta_norm: float   # ‖δ‖₂ at the end of the ascent
    seconds: float      # wall time of the round, callback excluded
    inner_seconds: float = 0.0  # of which: the search for δ
    delta: torch.Tensor | None = field(default=None, repr=False)  # this round's δ (CPU)
    # Diagnostics a defender can compute (clean data only): where δ sends clean images, per class (fraction
    # of the first ≤ 1,000 clean images predicted as each class once δ is added), and the linear solves.
    fooling: list[float] = field(default_factory=list)
    solver_residual: float = float("nan")  # mean relative residual of the round's solves (nan: not computed)
    solver_breakdowns: int = 0             # solves that met negative curvature (CG on an indefinite system)
    patch_pixels: int | None = None        # pixels of δ's stamp (patch_threshold), None: none found or off
    patch_fooling: float | None = None     # share of clean images that stamp sent to one class
    patch_fooling_after: float | None = None  # the same share on the model after the round: does the stamp still work?
    patch_class: int | None = None         # the class whose targeted search gave the stamp (None: δ gave it)
    patch_suspect: int | None = None       # patch_pick "l1": the class whose sparse δ has the smallest ‖δ‖₁ ...
    patch_anomaly: float | None = None     # ... and its anomaly index (the stamp is its own from 2 on)
    smooth_class: int | None = None        # smooth_search: the class the round's smooth δ is aimed at
    smooth_fooling: float | None = None    # smooth_search: share of other-class clean images it sends there
    blend_class: int | None = None         # blend_search: the class the round's blended pattern is aimed at
    blend_fooling: float | None = None     # blend_search: share of other-class clean images it sends there
    blend_screen: list[float] | None = None  # blend_search, round 1: each class's rate in the screen
    blend_also: list[int] | None = None    # blend_also: the further classes whose patterns the round carried too
    blend_also_fooling: list[float] | None = None  # ... and the share of other-class clean images each sends there
    patch_also: list[int] | None = None    # patch_also: the classes whose stamps the round stamped beside its own
    patch_also_pixels: list[int] | None = None  # ... and each one's size in pixels
    blend_gated: bool = False              # blend_gate: no class stood out in round 1's screen; no pattern carried
    blend_stopped: bool = False            # blend_stop: an earlier round cost the slice too much; no pattern carried
    probe_rate: float | None = None        # round_selection "probe": share of clean images the probe sends to the suspect
    guard_acc: float | None = None         # acc_guard or blend_stop: clean accuracy on the held-back slice after the round
    guard_start: float | None = None       # ... and the handed-over model's, which the drop is measured from
    rolled_back: bool = False              # acc_guard: the round cost too much of it and its θ steps were undone
    extra: dict[str, Any] = field(default_factory=dict)


@dataclass
class UnlearnResult:
    model: nn.Module
    delta: torch.Tensor               # the last finished round's δ (C×H×W, pixel space)
    history: list[RoundRecord]
    config: IBAUConfig
    seconds: float                    # total wall time, callbacks excluded
    interrupted: bool = False         # stopped by Ctrl-C; the model is the last finished round's
    selected_round: int | None = None  # the round whose model (and δ) is returned; None: no round finished;
    #                                    0: the model as handed over (guard_mode "select": no round kept accuracy)
    suspect: int | None = None         # round_selection "probe": the class the probe watches
    closest_fallback: bool = False     # guard_fallback "closest" chose the round: none was within acc_guard


Callback = Callable[[RoundRecord, nn.Module, torch.Tensor], "dict[str, Any] | bool | None"]


def _as_tensors(clean_data) -> tuple[torch.Tensor, torch.Tensor]:
    """Accept an ImageSet, an ``(images, labels)`` pair of tensors, a Dataset, or an iterable of batches."""
    if hasattr(clean_data, "images") and hasattr(clean_data, "labels"):
        return clean_data.images, clean_data.labels
    if isinstance(clean_data, (tuple, list)) and len(clean_data) == 2 and all(isinstance(t, torch.Tensor) for t in clean_data):
        return clean_data[0], clean_data[1]  # an (images, labels) pair; a list of batches holds tuples
    if isinstance(clean_data, torch.utils.data.Dataset) and hasattr(clean_data, "__len__") and hasattr(clean_data, "__getitem__"):
        items = [clean_data[i] for i in range(len(clean_data))]
        if not items:
            raise ValueError("the clean set is empty; give at least one image")
        return torch.stack([torch.as_tensor(x) for x, _ in items]), torch.as_tensor([int(y) for _, y in items])
    if isinstance(clean_data, Iterable):
        xs, ys = [], []
        for batch in clean_data:
            if not (isinstance(batch, (tuple, list)) and len(batch) >= 2):
                raise TypeError("clean_data batches must be (images, labels) pairs")
            xs.append(torch.as_tensor(batch[0]))
            ys.append(torch.as_tensor(batch[1]).reshape(-1))
        if not xs:
            raise ValueError("the clean set is empty; give at least one image")
        return torch.cat(xs), torch.cat(ys)
    raise TypeError(f"clean_data must be a Dataset, an (images, labels) pair or an iterable of batches, got {type(clean_data).__name__}")


#: words of PyTorch's messages for inputs of the wrong shape or channel count
_SHAPE_ERRORS = ("shape", "size", "channels", "dimension", "mat1 and mat2")


def _param_dtype(model: nn.Module) -> torch.dtype:
    param = next(model.parameters(), None)
    return param.dtype if param is not None and param.is_floating_point() else torch.float32


@contextlib.contextmanager
def _flush_denormal(enabled: bool):
    """Flush subnormal floats to zero inside the block and restore the previous (process-wide) setting."""
    if not enabled:
        yield
        return
    before = float((torch.tensor([1e-39]) * torch.tensor([1.0]))[0]) == 0.0  # PyTorch has no getter
    torch.set_flush_denormal(True)  # False (and no effect) where the CPU lacks support
    try:
        yield
    finally:
        torch.set_flush_denormal(before)


def _precision(device: torch.device, precision: str):
    """The round's autocast: bfloat16 forward passes where asked, nothing otherwise."""
    if precision == "float32":
        return contextlib.nullcontext()
    return torch.autocast(device_type=device.type, dtype=torch.bfloat16)


def _validate(model: nn.Module, x: torch.Tensor, y: torch.Tensor, device: torch.device) -> int:
    """Check the clean set against the model; returns the number of classes."""
    check_images(x, "clean images")
    check_labels(y, n=len(x), name="clean labels")
    dtype = _param_dtype(model)
    try:
        with eval_mode(model), torch.no_grad():
            out = model(x[:1].to(device, dtype))
    except RuntimeError as exc:
        msg = str(exc).strip().splitlines()[0][:200]
        if not any(word in msg for word in _SHAPE_ERRORS):
            raise  # not a shape problem: a real error of the model, with its traceback
        raise ValueError(f"clean images of shape {tuple(x.shape[1:])} do not fit the model ({msg}); "
                         "resize them or check the channel count") from exc
    if out.dim() != 2:
        raise ValueError(f"the model must return N×classes logits, got shape {tuple(out.shape)}")
    num_classes = out.shape[1]
    check_labels(y, num_classes=num_classes, name="clean labels")
    return num_classes


def unlearn(model: nn.Module, clean_data, config: IBAUConfig | None = None, callback: Callback | None = None,
            inplace: bool = False, progress: bool = True) -> UnlearnResult:
    """Remove a backdoor from ``model`` with I-BAU, using only clean labelled data.

    Args:
        model: any classifier returning logits for pixel-space images in [0, 1].
        clean_data: the defender's clean set: an ``(images, labels)`` pair, an ``ImageSet``, a
            ``Dataset`` of ``(image, label)`` or an iterable of ``(images, labels)`` batches. It is held in
            memory (clean sets are small).
        config: :class:`IBAUConfig` (default: ``IBAUConfig()``).
        callback: ``callback(record, model, delta)`` after each round; a returned dict is stored in
            ``record.extra``, ``True`` stops early. Its time is not counted in ``seconds``.
        inplace: modify ``model`` itself instead of a copy (default False).
        progress: show a progress bar (default True).

    Data-parallel (docs/scale.md): under ``torchrun --nproc-per-node N``, or in a process group the caller
    initialised, every rank passes the same clean set and config; each global batch is drawn alike on all
    ranks and each rank's model sees every N-th image of it; δ's gradient, the hypergradient and the counts
    are summed over the ranks (:mod:`ibau.unlearn.distributed`), so all ranks end with the δ and θ one
    process computes with the same batches (to rounding; train-mode BatchNorm and dropout differ). Every
    rank starts from rank 0's weights, as with DDP. Only rank 0 shows progress; the callback runs on every
    rank, and stops the run when any rank's returns True.

    Returns:
        :class:`UnlearnResult` with the unlearned model (eval mode), its round's δ and a per-round history;
        the model is the last round's, or with ``round_selection="probe"`` the round's the probe chose
        (``selected_round``). Ctrl-C ends the run after returning the last finished round (``interrupted=True``),
        or the probe's choice among the finished rounds.

    >>> result = unlearn(model, (clean_x, clean_y), IBAUConfig.reference(rounds=1))  # doctest: +SKIP
    """
    cfg = config or IBAUConfig()
    if not isinstance(cfg, IBAUConfig):
        raise TypeError(f"config must be an IBAUConfig, got {type(cfg).__name__}")
    if not isinstance(model, nn.Module):
        raise TypeError(f"model must be a torch.nn.Module, got {type(model).__name__}")
    device = distributed.local_device(resolve_device(cfg.device) if cfg.device else next(model.parameters()).device)
    ranks = distributed.connect(device)
    net = model if inplace else copy.deepcopy(model)
    net.to(device)
    ranks.share_model(net)
    x_all, y_all = _as_tensors(clean_data)
    num_classes = _validate(net, x_all, y_all, device)
    x_all, y_all = x_all.to(device, _param_dtype(net)), y_all.to(device, torch.int64)
    ranks.check_same([x_all, y_all], "the clean set")
    guarded = cfg.acc_guard is not None
    x_guard, y_guard = x_all[:0], y_all[:0]
    if guarded:  # the guard's slice never unlearns: the θ steps would fit it
        kept, held_back = guard_split(len(x_all), cfg)
        (x_guard, y_guard), (x_all, y_all) = (x_all[held_back], y_all[held_back]), (x_all[kept], y_all[kept])

    def guard_accuracy() -> float:  # clean accuracy on the held-back slice
        return float((predictions(net, x_guard, ranks=ranks) == y_guard).float().mean())
    if cfg.channels_last:
        net.to(memory_format=torch.channels_last)
        if x_all.dim() == 4:
            x_all = x_all.contiguous(memory_format=torch.channels_last)

    bs = cfg.batch_size
    inner_steps, outer_steps = round_steps(cfg, len(x_all))
    gen = torch.Generator().manual_seed(cfg.seed)

    def batches():
        return iterate_batches(x_all, y_all, bs, gen, shuffle=cfg.shuffle)

    # clean_distill: the handed-over model's log-probabilities on the clean set, once; the θ steps' batches then
    # carry each image's row of them (the same rows, drawn from the same generator, as without)
    distill_weight = cfg.distill_weight(len(x_all))
    teacher = log_probabilities(net, x_all, num_classes, ranks=ranks) if distill_weight else None

    def outer_batches():
        if teacher is None:
            return batches()
        return iterate_batches(x_all, y_all, bs, gen, shuffle=cfg.shuffle, extra=(teacher,))

    # the class search (patch_search "classes") draws its batches from a generator of its own, so a search
    # that finds no stamp leaves the run exactly as it would be without it
    search_gen = torch.Generator().manual_seed(cfg.seed + 1)

    def search_batches():
        return iterate_batches(x_all, y_all, bs, search_gen, shuffle=cfg.shuffle)

    # the round probe draws from a generator of its own too: choosing a round never changes the rounds
    probe_gen = torch.Generator().manual_seed(cfg.seed + 2)

    def probe_batches(labels=None):  # x_all and y_all as they are when called (blend_stop may hold a slice back)
        return iterate_batches(x_all, y_all if labels is None else labels, bs, probe_gen, shuffle=True)

    # and so does the smooth search (smooth_search): without it the run is the same as before the option
    smooth_gen = torch.Generator().manual_seed(cfg.seed + 3)

    def smooth_batches():
        return iterate_batches(x_all, y_all, bs, smooth_gen, shuffle=cfg.shuffle)

    # outer_augment: the θ steps' images augmented, drawn from a generator of their own (without it: the same run)
    augment = (cfg.outer_augment if cfg.augments(len(x_all)) else "none", torch.Generator().manual_seed(cfg.seed + 4))

    params = [p for p in net.parameters() if p.requires_grad]
    opt_cls = torch.optim.Adam if cfg.outer_optimizer == "adam" else torch.optim.SGD
    # one optimiser state for all δs, or one per δ of a round (per_delta_optimizer), each on its share of steps
    searches = _searches(cfg)
    states = len(searches) if cfg.per_delta_optimizer else 1
    opts = [opt_cls(params, lr=cfg.step_size(len(x_all))) for _ in range(states)]

    def planned(rounds: int) -> list:  # the θ step's schedule of each optimiser, over a run of that many rounds
        return [_outer_schedule(o, cfg, math.ceil(rounds * outer_steps / states)) for o in opts]

    schedules = planned(cfg.rounds)
    solver = cfg.make_solver()
    history: list[RoundRecord] = []
    delta = torch.zeros(x_all.shape[1:], device=device, dtype=x_all.dtype)
    snapshot = copy.deepcopy(net.state_dict())
    opt_snapshot = [copy.deepcopy(o.state_dict()) for o in opts] if guarded else []
    interrupted, total_seconds = False, 0.0
    bar_steps = len(searches) * inner_steps + outer_steps  # the progress bar's steps a round
    bar = tqdm(total=cfg.rounds * bar_steps, desc="I-BAU",
               disable=not (progress and ranks.is_main), leave=False)
    # Dropout in train mode draws from the global RNG: fork it, seeded from cfg.seed, so the same seed
    # gives the same weights and the caller's RNG state is left as it was (each rank its own stream, so
    # that the ranks' images do not share dropout masks).
    rng = torch.random.fork_rng(devices=[device] if device.type == "cuda" else [])

    probe = cfg.round_selection == "probe"
    selecting = guarded and cfg.guard_mode == "select"
    handed_over = snapshot  # the weights before round 1 (snapshot is rebound, never changed in place)
    best: tuple[float, int, dict, torch.Tensor] | None = None  # the probe's choice: (rate, round, weights, δ)
    closest: tuple[float, int, dict, torch.Tensor] | None = None  # guard_fallback "closest": the best slice accuracy
    suspect, floor = None, math.inf  # floor: the lowest probe rate so far
    smooth_class: int | None = None  # smooth_search: the class chosen by round 1's screen
    smooth: torch.Tensor | None = None  # smooth_search: the round's smooth δ (with smooth_rounds "first": round 1's)
    blend_class: int | None = None  # blend_search: the class chosen by round 1's screen
    blend_also: list[int] = []  # blend_also: the further classes of round 1's screen whose patterns are carried too
    blend_gated = False  # blend_gate: round 1's screen found no class standing out, so no pattern is carried
    blend_stopped = False  # blend_stop: a round cost the held-back slice more than allowed; no pattern from then on
    carried_slice: float | None = None  # blend_stop_rule "trend": the slice's accuracy after the last carried round
    replay: list[tuple[torch.Tensor, str, float | None]] = []  # delta_memory: earlier rounds' δs, latest first
    last_stamp: tuple[tuple, int | None] | None = None  # patch_rounds "kept": the latest stamp found and its class
    with _flush_denormal(cfg.flush_denormal), rng:
        torch.manual_seed(cfg.seed + ranks.rank)
        if probe:
            with eval_mode(net):
                own = predictions(net, x_all, ranks=ranks)
                suspect, share = suspect_class(net, lambda: probe_batches(own), x_all[:FOOLING_SAMPLE], cfg,
                                               num_classes, ranks=ranks)
            if ranks.is_main:
                logger.info("round probe: a δ of ℓ2 norm %g sends %.1f%% of the clean images to class %d, the suspect",
                            cfg.probe_bound, 100 * share, suspect)
        guard_before = guard_accuracy() if guarded else math.nan
        rounds = cfg.rounds  # blend_rounds: where the gate opens, round 1 sets another number before any θ step
        try:
            for r in itertools.count():
                if r == rounds:
                    break
                t0 = time.perf_counter()
                # the round in the asked precision; the callback then sees the model as deployed
                with _precision(device, cfg.precision):
                    net.eval()  # δ is always searched against the deployed (eval-mode) model
                    start = delta if cfg.inner_warm_start else None
                    # the model's own predictions, once a round: θ does not move while δ is searched, so
                    # every search of the round and the stamp's scoring share them
                    labels = predictions(net, x_all, ranks=ranks) if cfg.pseudo_labels else y_all

                    def delta_batches(labels=labels, images=x_all):
                        return iterate_batches(images, labels, bs, gen, shuffle=cfg.shuffle)

                    found = [solve_delta(net, delta_batches, tuple(x_all.shape[1:]), search, inner_steps,
                                         on_step=lambda *_: bar.update(1), start=start if i < cfg.inner_restarts else None,
                                         ranks=ranks)
                             for i, search in enumerate(searches)]
                    new_delta, inner_loss = found[0]
                    before = ranks.shard(labels[:FOOLING_SAMPLE]) if cfg.pseudo_labels else None
                    notes: dict[str, Any] = {}  # the l1 pick's suspect class and anomaly index, where it ran
                    patch, patch_class = _round_patch(net, search_batches, x_all[:FOOLING_SAMPLE], new_delta, cfg,
                                                      num_classes, _class_search_due(cfg, history), ranks, before,
                                                      notes)
                    if patch is not None:
                        last_stamp = (patch, patch_class)
                    elif cfg.patch_rounds == "kept" and last_stamp is not None:  # none found: stamp the latest one again
                        patch, patch_class = last_stamp
                    smooth_fooling = None
                    if cfg.smooth_search is not None and (cfg.smooth_rounds == "every" or smooth is None):
                        smooth, smooth_class, smooth_fooling = smooth_trigger(
                            net, smooth_batches, x_all[:FOOLING_SAMPLE], cfg, inner_steps, num_classes,
                            target=smooth_class, ranks=ranks, before=before)
                    carried: tuple[Callable[[torch.Tensor], torch.Tensor], ...] = (
                        () if smooth is None else (functools.partial(perturb, delta=smooth, clamp=True),))
                    blend_fooling, blend_carried, also_fooling = None, False, None
                    screen: dict[str, Any] = {}  # blend_search: round 1's rate of each class
                    if cfg.blend_search is not None and not (blend_gated or blend_stopped) \
                            and r < (cfg.blend_until or rounds):
                        pattern, blend_class, blend_fooling = blend_trigger(
                            net, smooth_batches, x_all[:FOOLING_SAMPLE], cfg, inner_steps, num_classes,
                            target=blend_class, ranks=ranks, before=before, notes=screen)
                        blend_gated = screen.get("gated", False)
                        if not blend_gated:
                            if cfg.blend_also is not None and r == 0:
                                blend_also = also_classes(screen["rates"], blend_class, cfg.blend_also)
                            also = [blend_trigger(net, smooth_batches, x_all[:FOOLING_SAMPLE], cfg, inner_steps,
                                                  num_classes, target=c, ranks=ranks, before=before) for c in blend_also]
                            also_fooling = [sent for *_, sent in also] if blend_also else None
                            carried = tuple(functools.partial(blend, pattern=p, alpha=cfg.blend_search)
                                            for p in [pattern] + [p for p, *_ in also])
                            blend_carried = True
                            if cfg.blend_stop is not None and not len(x_guard):
                                # the gate opened: from here on a slice watches what carrying the pattern costs
                                kept, held_back = guard_split(len(x_all), cfg)
                                (x_guard, y_guard), (x_all, y_all) = ((x_all[held_back], y_all[held_back]),
                                                                      (x_all[kept], y_all[kept]))
                                teacher = None if teacher is None else teacher[kept]
                                guard_before = guard_accuracy()  # θ has not moved yet: the model as handed over
                            if cfg.blend_rounds is not None and r == 0:
                                # the pattern's rounds win back what it costs (CIFAR-10 Blend): plan the θ steps'
                                # schedule over them, as a run of that many rounds would
                                rounds = cfg.blend_rounds
                                schedules, bar.total = planned(rounds), rounds * bar_steps
                                bar.refresh()
                        elif ranks.is_main:
                            logger.info("blend gate: no class stands out in the blend screen (class %d sent %.1f%% "
                                        "of the clean images; the gate asks %.1f points above the median of the "
                                        "other classes); no blended pattern is carried", blend_class,
                                        100 * blend_fooling, 100 * (cfg.blend_gate or 0.0))
                    further = class_stamps(net, search_batches, x_all[:FOOLING_SAMPLE], cfg, cfg.patch_steps,
                                           num_classes, ranks=ranks, before=before, skip=patch_class) \
                        if cfg.patch_also and r == 0 and blend_carried and blend_also else []
                    stamps = (() if patch is None else (patch,)) + tuple(stamp[:3] for stamp in further)
                    inner_seconds = time.perf_counter() - t0
                    net.train(cfg.model_mode == "train")
                    stats: list[SolveStats] = []
                    round_deltas = [(d, search.norm, search.norm_bound) for (d, _), search in zip(found, searches)]
                    outer_loss = _outer_pass(net, params, opts, solver, outer_batches, round_deltas + replay, cfg,
                                             outer_steps, gen, stats, on_step=lambda *_: bar.update(1), stamps=stamps,
                                             carried=carried, schedules=schedules, ranks=ranks,
                                             distill_weight=distill_weight, augment=augment)
                    net.eval()
                    guard_acc, rolled_back, eligible = None, False, True
                    if len(x_guard):
                        guard_acc = guard_accuracy()
                    if cfg.acc_guard is not None and guard_acc is not None:
                        eligible = guard_before - guard_acc <= cfg.acc_guard
                        rolled_back = not eligible and cfg.guard_mode == "rollback"
                        if rolled_back:  # undo the round's θ steps; the rounds left step more gently
                            net.load_state_dict(snapshot)
                            restore_optimizers(opts, opt_snapshot)
                            scale_step(opts, schedules, cfg.guard_backoff)
                    rate = None if suspect is None else probe_rate(net, probe_batches, x_all[:FOOLING_SAMPLE], suspect,
                                                                   cfg, num_classes, ranks=ranks)
                    seconds = time.perf_counter() - t0
                    record = RoundRecord(r + 1, inner_loss, outer_loss, float(new_delta.norm()), seconds,
                                         inner_seconds, new_delta.detach().cpu(),
                                         fooling=fooling_rates(net, x_all[:FOOLING_SAMPLE], new_delta, cfg.clamp,
                                                               num_classes, ranks=ranks),
                                         **_solve_summary(stats),
                                         patch_pixels=None if patch is None else int(patch[0].sum()),
                                         patch_fooling=None if patch is None else patch[2], patch_class=patch_class,
                                         patch_suspect=notes.get("suspect"), patch_anomaly=notes.get("anomaly"),
                                         patch_also=[c for *_, c in further] or None,
                                         patch_also_pixels=[int(m.sum()) for m, *_ in further] or None,
                                         patch_fooling_after=None if patch is None else stamp_rate(
                                             net, x_all[:FOOLING_SAMPLE], patch[0], patch[1], ranks=ranks),
                                         smooth_class=smooth_class,
                                         smooth_fooling=smooth_fooling,
                                         blend_class=blend_class, blend_fooling=blend_fooling,
                                         blend_also=(blend_also or None) if blend_carried else None,
                                         blend_also_fooling=also_fooling,
                                         blend_screen=screen.get("rates"), blend_gated=blend_gated,
                                         blend_stopped=blend_stopped,
                                         probe_rate=rate, guard_acc=guard_acc, rolled_back=rolled_back,
                                         guard_start=None if guard_acc is None else guard_before)
                if _blend_stops(cfg, blend_carried, guard_before, guard_acc, carried_slice):
                    blend_stopped = True  # the pattern costs the clean accuracy the rounds should win back
                    if ranks.is_main:
                        logger.info("blend stop: round %d took clean accuracy from %.1f%% to %.1f%% on the held-back "
                                    "slice; no later round carries the blended pattern", r + 1, 100 * guard_before,
                                    100 * (guard_acc or 0.0))
                if blend_carried:
                    carried_slice = guard_acc
                if not eligible and ranks.is_main:
                    logger.info("accuracy guard: round %d took clean accuracy from %.1f%% to %.1f%% on the held-back "
                                "slice; %s", r + 1, 100 * guard_before, 100 * (guard_acc or 0.0),
                                f"rolled back, θ step now ×{cfg.guard_backoff:g}" if rolled_back
                                else "it runs on but cannot be the round returned")
                if record.solver_breakdowns and ranks.is_main:
                    logger.warning("round %d: %d of %d hypergradient solves met negative curvature (%s on an "
                                   "indefinite system solves nothing); use solver='minres' or solver_damping",
                                   r + 1, record.solver_breakdowns, len(stats), cfg.solver)
                if not rolled_back:
                    delta = new_delta  # only a finished round's δ is kept, with the model of that round
                    # delta_memory: the latest rounds' δs first; whole rounds, so δ i keeps optimiser state i mod len
                    replay = (round_deltas + replay)[:cfg.delta_memory * len(round_deltas)]
                total_seconds += record.seconds
                history.append(record)
                snapshot = copy.deepcopy(net.state_dict())
                if guarded:
                    opt_snapshot = [copy.deepcopy(o.state_dict()) for o in opts]
                # the latest round within probe_tolerance of the lowest rate: a later round has unlearned longer
                # and let clean accuracy settle; a round that sets a new low is always within it. With the guard
                # selecting, only the rounds within acc_guard of the start compete (without the probe: the latest)
                if selecting and not rolled_back and (closest is None or (guard_acc or 0.0) >= closest[0]):
                    closest = (guard_acc or 0.0, r + 1, snapshot, delta)
                if eligible or not selecting:
                    floor = min(floor, rate if rate is not None else math.inf)
                    if (rate is None and selecting) or (rate is not None and rate <= floor + cfg.probe_tolerance):
                        best = (math.nan if rate is None else rate, r + 1, snapshot, delta)
                bar.set_postfix(delta=f"{record.delta_norm:.2f}", outer=f"{outer_loss:.3f}")
                if callback is not None:
                    answer = callback(record, net, delta)
                    if isinstance(answer, dict):
                        record.extra.update(answer)
                    if ranks.any_rank(answer is True):  # every rank stops after the same round
                        break
        except KeyboardInterrupt:
            interrupted = True
            net.load_state_dict(snapshot)
        finally:
            bar.close()
    selected, fell_back = len(history) or None, False
    if selecting and history and best is None:  # no round within acc_guard: the fallback
        if cfg.guard_fallback == "closest" and closest is not None:
            _, selected, weights, delta = closest
            fell_back, said = True, f"round {selected}, the closest ({100 * (guard_before - closest[0]):.1f} points)"
        else:
            selected, weights, delta = 0, handed_over, torch.zeros_like(delta)
            said = "the model as it was handed over"
        net.load_state_dict(weights)
        if ranks.is_main:
            logger.warning("accuracy guard: every round cost more than %.1f points of clean accuracy on the held-back "
                           "slice; returning %s", 100 * (cfg.acc_guard or 0.0), said)
    elif best is not None and best[1] != selected:
        _, selected, weights, delta = best
        net.load_state_dict(weights)
        if ranks.is_main and not probe:
            logger.info("accuracy guard: keeping round %d of %d, the latest within %.1f points of the start",
                        selected, len(history), 100 * (cfg.acc_guard or 0.0))
        elif ranks.is_main:
            logger.info("round probe: keeping round %d of %d (%.1f%% of clean images to class %s; last round %.1f%%)",
                        selected, len(history), 100 * best[0], suspect, 100 * (history[-1].probe_rate or 0.0))
    net.eval()
    if cfg.channels_last:
        net.to(memory_format=torch.contiguous_format)  # safetensors and most callers expect contiguous weights
    return UnlearnResult(net, delta.detach().cpu(), history, cfg, total_seconds, interrupted, selected, suspect,
                         fell_back)


def round_steps(cfg: IBAUConfig, n: int) -> tuple[int, int]:
    """``(inner_steps, outer_steps)`` of a round on ``n`` clean images: ``inner_passes`` passes (rounded up)
    and one pass, each at least ``min_steps``, unless ``inner_steps`` / ``outer_steps`` fix them."""
    batches_per_pass = (n + cfg.batch_size - 1) // cfg.batch_size
    inner = cfg.inner_steps
    if inner is None:
        inner = max(math.ceil(cfg.inner_passes * batches_per_pass), cfg.min_steps)
    outer = max(batches_per_pass, cfg.min_steps) if cfg.outer_steps is None else cfg.outer_steps
    return inner, outer


def _searches(cfg: IBAUConfig) -> list[IBAUConfig]:
    """The δ searches of a round: ``inner_restarts`` with the configured constraint, then, with
    ``bounded_search``, one inside the ℓ2 ball of that radius (a search reads only the δ options). Their
    batches carry the round's labels already (the pseudo-labels, computed once a round)."""
    main = cfg.replace(pseudo_labels=False)
    bounded = [] if cfg.bounded_search is None else [main.replace(norm="l2", norm_bound=cfg.bounded_search)]
    return [main] * cfg.inner_restarts + bounded


def _blend_stops(cfg: IBAUConfig, carried: bool, start: float, slice_acc: float | None,
                 previous: float | None) -> bool:
    """Whether ``blend_stop`` ends the blended pattern after a round: the round ``carried`` it and left the held-back
    slice at ``slice_acc``, more than ``cfg.blend_stop`` below ``start`` (the model as handed over); with
    ``blend_stop_rule="trend"`` also no higher than ``previous``, the slice after the carried round before it (None
    for the first carried round, which never stops it: the later rounds may win its cost back)."""
    if cfg.blend_stop is None or not carried or slice_acc is None or start - slice_acc <= cfg.blend_stop:
        return False
    return cfg.blend_stop_rule == "drop" or (previous is not None and slice_acc <= previous)


def _class_search_due(cfg: IBAUConfig, history: list[RoundRecord]) -> bool:
    """Whether this round may run the class search when δ gives no stamp: patch_search "classes" in every
    round, "classes_until_found" while no earlier round found a stamp, "classes_first_round" in round 1."""
    if cfg.patch_search == "classes_first_round":
        return not history
    if cfg.patch_search == "classes_until_found":
        return not any(h.patch_pixels is not None for h in history)
    return cfg.patch_search == "classes"


def _round_patch(net, batches, x: torch.Tensor, delta: torch.Tensor, cfg: IBAUConfig, num_classes: int,
                 search_due: bool, ranks: Ranks = SINGLE, before: torch.Tensor | None = None,
                 notes: dict[str, Any] | None = None):
    """This round's stamp and the class whose search found it: δ's own, else (when ``search_due``) the
    smallest of the classes' sparse targeted searches (also when δ's has more than ``patch_search_above``
    pixels, the smaller of the two winning); ``(None, None)`` when off or none found. ``before``:
    the model's predictions on this rank's share of ``x`` when the round has them; ``notes``: a dict the
    ``patch_pick="l1"`` search writes its suspect class and anomaly index to."""
    if cfg.patch_threshold <= 0:
        return None, None
    patch = delta_patch(net, x, delta, cfg.patch_threshold, before=before, ranks=ranks)
    pixels = None if patch is None else int(patch[0].sum())
    within = pixels is not None and (cfg.patch_search_above is None or pixels <= cfg.patch_search_above)
    l1 = cfg.patch_pick == "l1"  # the l1 pick searches the classes whatever δ gives
    if not search_due or (within and not l1):
        return patch, None
    found = class_patch(net, batches, x, cfg, cfg.patch_steps, num_classes, ranks=ranks, before=before, notes=notes)
    if isinstance(found, OutlierStamp):  # the class standing out by ‖δ‖₁ wins over δ's own stamp
        return found[:3], found[3]
    if within or found is None or (pixels is not None and int(found[0].sum()) >= pixels):  # δ's wins a tie
        return patch, None
    return found[:3], found[3]


def predictions(model: nn.Module, x: torch.Tensor, batch_size: int = 100, *, ranks: Ranks = SINGLE) -> torch.Tensor:
    """The model's predicted class of every image of ``x`` (eval mode, no graph; batches of 100 ran 1.5×
    faster than of 500 on the 2-core CPU, benchmarks/pseudo_labels.py). Across ``ranks`` each rank
    predicts its share (every ``world``-th image) and the shares are summed into the whole."""
    out = torch.zeros(len(x), dtype=torch.int64, device=x.device)
    return _each_image(model, x, out, lambda logits: logits.argmax(1), batch_size, ranks)


def log_probabilities(model: nn.Module, x: torch.Tensor, num_classes: int, batch_size: int = 100, *,
                      ranks: Ranks = SINGLE) -> torch.Tensor:
    """The model's log-probabilities (N×classes) on every image of ``x``, computed as :func:`predictions`."""
    out = torch.zeros(len(x), num_classes, dtype=x.dtype, device=x.device)
    return _each_image(model, x, out, lambda logits: F.log_softmax(logits, 1), batch_size, ranks)


def _each_image(model: nn.Module, x: torch.Tensor, out: torch.Tensor, head: Callable[[torch.Tensor], torch.Tensor],
                batch_size: int, ranks: Ranks) -> torch.Tensor:
    """``out`` (zeros, one row per image of ``x``) filled with ``head`` of the model's logits, in eval mode with no
    graph; each rank fills its share (every ``world``-th image) and the shares are summed into the whole.
    ``out`` is made outside inference mode, so the result is usable in differentiated losses."""
    share = ranks.shard(torch.arange(len(x), device=x.device))
    with eval_mode(model), torch.inference_mode():
        for i in range(0, len(share), batch_size):
            rows = share[i:i + batch_size]
            out[rows] = head(model(x[rows]))
    (out,) = ranks.all_reduce_sum(out)
    return out


def fooling_rates(model: nn.Module, x: torch.Tensor, delta: torch.Tensor, clamp: bool, num_classes: int,
                  batch_size: int = 100, *, ranks: Ranks = SINGLE) -> list[float]:
    """Fraction of the images ``x`` the model assigns to each class once ``delta`` is added (clean data only).
    Across ``ranks`` each rank counts its share and the counts are summed."""
    counts = torch.zeros(num_classes, dtype=torch.long)
    share = ranks.shard(x)
    with eval_mode(model), torch.inference_mode():
        for i in range(0, len(share), batch_size):
            pred = model(perturb(share[i:i + batch_size], delta, clamp)).argmax(1)
            counts += torch.bincount(pred.cpu(), minlength=num_classes)
    (counts,) = ranks.all_reduce_sum(counts)
    return (counts.double() / max(len(x), 1)).tolist()


def _distillation(logits: torch.Tensor, teacher: torch.Tensor, altered, total: int) -> torch.Tensor:
    """KL(teacher ‖ model) summed over the rows that carry neither δ nor a stamp (``altered``: their row
    selections, None for none), over ``total`` (the global batch's rows): this rank's part of the batch mean,
    as its cross-entropy."""
    plain = torch.ones(len(logits), dtype=torch.bool, device=logits.device)
    for rows in altered:
        if rows is not None:
            plain[rows] = False
    log_p = F.log_softmax(logits[plain].to(teacher.dtype), 1)  # bfloat16 logits (precision) in the teacher's
    return F.kl_div(log_p, teacher[plain], log_target=True, reduction="sum") / total


def _solve_summary(stats: list[SolveStats]) -> dict[str, Any]:
    residuals = [s.residual for s in stats if s.residual == s.residual]
    return {"solver_residual": sum(residuals) / len(residuals) if residuals else float("nan"),
            "solver_breakdowns": sum(s.breakdown is not None for s in stats)}


def _outer_schedule(opt, cfg: IBAUConfig, total_steps: int):
    """The θ step size per step: constant or a half cosine to 0 over ``total_steps``, after a linear warm-up."""
    cosine = cfg.outer_lr_schedule == "cosine"
    if not cfg.outer_lr_warmup:
        return torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=max(total_steps, 1)) if cosine else None
    warmup, total = cfg.outer_lr_warmup, max(total_steps, 1)

    def factor(t: int) -> float:
        rise = min(1.0, (t + 1) / (warmup + 1))
        return rise * (0.5 * (1 + math.cos(math.pi * min(t, total) / total)) if cosine else 1.0)
    return torch.optim.lr_scheduler.LambdaLR(opt, factor)


def _outer_pass(net, params, opts, solver, batches, deltas: list[tuple[torch.Tensor, str, float | None]],
                cfg: IBAUConfig, steps: int, gen: torch.Generator, stats: list[SolveStats], on_step, stamps=(),
                carried: tuple[Callable[[torch.Tensor], torch.Tensor], ...] = (), schedules=None, ranks: Ranks = SINGLE,
                distill_weight: float = 0.0, augment: tuple[str, torch.Generator | None] = ("none", None)) -> float:
    """``steps`` θ updates with the implicit hypergradient; the δs (each with the norm and bound it was
    searched under, which its KKT system needs) stay fixed, step t uses δ[t mod len].
    Returns the mean L_out. Across ``ranks`` the hyper batch, the images that carry δ or its stamp and
    every draw are chosen on the global batch; each rank computes the losses on its share of them and the
    hypergradient is summed over the ranks. ``carried``: the triggers found beside δ, each as the map that puts it
    on images (smooth_search's smooth δ added and clamped, blend_search's patterns blended), applied to
    ``patch_fraction`` of each batch, the rows before the stamp's (the last rows when there is no stamp); step t
    carries trigger t mod len (the same rows on every rank). ``stamps``: the round's stamps ``(mask, pattern, rate)``,
    on the last ``patch_fraction`` of each batch; step t stamps stamp t mod len (none: no rows stamped).
    ``distill_weight``: the weight of the distillation term (``cfg.distill_weight`` of the clean set's size).
    ``augment``: ``(name, generator)``, the augmentation of each batch's clean images (``outer_augment``) before
    δ, its stamp or the carried trigger go on them; the hyper batch is taken before it."""
    total, done, v = 0.0, 0, None
    hyper = None
    for x_all, y_all, *distill in cycle_batches(batches, steps):  # distill: the batch's teacher rows (clean_distill)
        if hyper is None or cfg.hyper_batch == "current":
            hyper = (x_all, y_all)
        xh, yh = hyper
        x_all = augment_images(x_all, *augment)  # for the global batch, so N ranks draw what one does
        if cfg.hyper_batch_size is not None:
            xh, yh = xh[:cfg.hyper_batch_size], yh[:cfg.hyper_batch_size]
        n, n_hyper = len(x_all), len(xh)
        xh, yh = ranks.shard(xh), ranks.shard(yh)
        k = max(1, round(cfg.perturb_fraction * n))
        # Which images carry δ: the first k of a shuffled batch, or k drawn at random from an ordered one.
        chosen = slice(0, k) if cfg.shuffle else torch.randperm(n, generator=gen)[:k].to(x_all.device)
        # δ's stamp (patch_threshold) goes on the last patch_fraction of the batch
        n_stamped = max(1, round(cfg.patch_fraction * n))
        stamped = slice(n - n_stamped, n) if stamps and k + n_stamped <= n else None
        stamp = stamps[done % len(stamps)] if stamps else None
        end = n if stamped is None else n - n_stamped
        smoothed = slice(end - n_stamped, end) if carried and k + n_stamped <= end else None
        carry = carried[done % len(carried)] if carried else None
        chosen_rows = ranks.local_rows(chosen, n, x_all.device)  # this rank's rows among them
        stamped_rows = None if stamped is None else ranks.local_rows(stamped, n, x_all.device)
        smoothed_rows = None if smoothed is None else ranks.local_rows(smoothed, n, x_all.device)
        x, y = ranks.shard(x_all), ranks.shard(y_all)
        teacher = ranks.shard(distill[0]) if distill else None
        # patch_pattern "random": noise in the stamp's mask, drawn for the global batch so N ranks draw what one does
        noise = ranks.shard(torch.rand(x_all.shape, generator=gen).to(x_all)) \
            if stamped is not None and cfg.patch_pattern == "random" else None

        def inner_loss(d, xh=xh, yh=yh, n_hyper=n_hyper):  # L_in = −H with true labels
            # δ maximised H of the eval-mode model, so the implicit function theorem holds for that H: in
            # model_mode "train" a train-mode L_in would be another function (batch statistics of 20
            # δ-images) and would pour those statistics into BatchNorm's running estimates every step.
            with eval_mode(net):
                return -objective(net, xh, yh, d, cfg, ranks=ranks, total=n_hyper)

        def outer_loss(d, x=x, y=y, n=n, chosen=chosen_rows, stamped=stamped_rows, smoothed=smoothed_rows,
                       teacher=teacher, noise=noise, carry=carry, stamp=stamp):
            mixed = x.clone()  # CE with δ on the chosen images (and the stamp on the stamped ones)
            if stamped is not None and stamp is not None:
                mask, pattern = stamp[0], (stamp[1] if noise is None else noise[stamped])
                mixed[stamped] = (1 - mask) * x[stamped] + mask * pattern
            if smoothed is not None and carry is not None:
                mixed[smoothed] = carry(x[smoothed])
            mixed[chosen] = perturb(x[chosen], d, cfg.clamp)
            logits = ranks.forward(net, mixed)
            loss = ranks.cross_entropy(logits, y, n)
            if teacher is not None:
                loss = loss + distill_weight * _distillation(logits, teacher, (chosen, stamped, smoothed), n)
            return loss

        stats.append(SolveStats())
        delta, norm, bound = deltas[done % len(deltas)]
        if len(deltas) > 1:
            v = None  # a warm start belongs to another δ's system
        grads, v_new, loss = implicit_hypergradient(inner_loss, outer_loss, delta, params, solver,
                                                    x0=v if cfg.warm_start else None, norm=norm,
                                                    bound=bound, damping=cfg.solver_damping,
                                                    projection_step=cfg.projection_step(),
                                                    stats=stats[-1], implicit=cfg.solver_iters > 0,
                                                    all_reduce=ranks.all_reduce_sum)
        v = v_new
        for p, g in zip(params, grads):
            p.grad = g
        state = done % len(deltas) % len(opts)  # δ[t mod len]'s own optimiser state, or the one shared
        opts[state].step()
        # autocast keeps its bfloat16 copies of the weights until its region ends, which is the whole round
        # here: without this the next steps would run on the copies of the weights before this step
        torch.clear_autocast_cache()
        if cfg.model_mode == "train":
            ranks.average_buffers(net)  # each rank's BatchNorm statistics followed its own rows
        if schedules is not None and schedules[state] is not None:
            schedules[state].step()
        total += float(loss)
        done += 1
        on_step()
    return total / max(done, 1)
