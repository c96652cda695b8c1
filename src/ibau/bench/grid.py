"""Expand ``suite × preset`` into jobs with stable ids, and run them resumably.

Two kinds of job: a *train* job makes one poisoned model (shared by every defense, suite and setting that
uses the same attack, poison ratio and recipe); a *defend* job runs one defense on one model with one clean
set size, variant and seed. Each finished job writes ``records/<id>.json`` (one fixed-key record); a re-run
skips jobs whose record exists, and an interrupted training resumes from its last epoch. The suite and
preset a run used are stored in ``suites/<name>.json``, so ``ibau report`` needs nothing but the folder.

How jobs run is a strategy (an *executor*): :class:`LocalExecutor` runs them in this process or in a pool of
``jobs`` processes, phase by phase (reference model, models, defenses); ``RayExecutor``
(:mod:`ibau.bench.ray_executor`) makes every job a Ray task that waits for the models it needs. Both run the
same job functions, which write the same records.
"""
from __future__ import annotations

import contextlib
import dataclasses
import functools
import hashlib
import json
import logging
import os
import shutil
import time
import traceback
from collections.abc import Callable, Iterator
from concurrent.futures import ProcessPoolExecutor, as_completed
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

from ..records import defense_outcome, new_record, read_record, write_record
from .suites import Preset, Suite, load_preset, load_suite

logger = logging.getLogger(__name__)


#: Every defense's preset settings as the records so far ran them (seed and device excluded: each job sets
#: them); a default that differs from these changes the ids of the jobs that run it (:func:`changed_defaults`).
RECORDED_DEFAULTS = Path(__file__).with_name("recorded_defaults.json")


def changed_defaults(method: str, preset: str, options: dict[str, Any] | None = None,
                     clean_size: int | None = None) -> dict[str, Any]:
    """The settings of ``method``'s ``preset`` whose default differs from the one in
    :data:`RECORDED_DEFAULTS`, with their values now (a setting not listed there counts as changed), leaving
    out those that ``options`` set.

    Empty while the defaults stand, so the ids of every job stay what they were. When a default changes (I-BAU's
    class search screened, say), the jobs that run it get these settings in their spec, hence new ids: a record
    made with the old default is kept as the evidence it is but no longer fills their cells. A new setting
    whose default runs what ran before is added to the file with that value. With ``clean_size``, a changed
    setting that acts only through the clean set's size (a config's ``SIZE_FIELDS``) is left out where the size
    rules come to the same at that size: a rule for small clean sets leaves the jobs with large ones as they were.
    """
    name, now = _resolved_config(method, preset)
    recorded = _recorded_defaults().get(method, {}).get(name, {})
    changed = {k: v for k, v in now.items()
               if k not in ("seed", "device") and k not in (options or {}) and (k not in recorded or recorded[k] != v)}
    inert = _inert_at_size(method, {**now, **recorded}, now, options, clean_size) if changed else ()
    return {k: v for k, v in changed.items() if k not in inert}


def _inert_at_size(method: str, before: dict[str, Any], after: dict[str, Any], options: dict[str, Any] | None,
                   clean_size: int | None) -> tuple[str, ...]:
    """The settings that act only through the clean set's size (the config's ``SIZE_FIELDS``) when the configs
    ``before`` and ``after`` (plain values, with ``options`` over them) resolve their size rules alike at
    ``clean_size`` clean images; none otherwise (no size given, or a config without size rules)."""
    from ..defenses import defense_class

    cls = defense_class(method).config_class
    fields = getattr(cls, "SIZE_FIELDS", ())
    if clean_size is None or not fields:
        return ()
    names = {f.name for f in dataclasses.fields(cls)}
    try:
        rules = [cls(**{k: v for k, v in {**config, **(options or {})}.items() if k in names}).size_rules(clean_size)
                 for config in (before, after)]
    except (TypeError, ValueError):  # a recorded combination the config refuses now: not the same run
        return ()
    return fields if rules[0] == rules[1] else ()


def _resolved_config(method: str, preset: str, options: dict[str, Any] | None = None) -> tuple[str, dict[str, Any]]:
    """The preset name the grid runs ``method`` with (``"default"`` for a defense without that preset) and its
    config with ``options``, as plain JSON values (what a record's ``config`` holds)."""
    from ..defenses import defense_class

    factories = defense_class(method).preset_configs()
    name = preset if preset in factories else "default"
    return name, json.loads(json.dumps(dataclasses.asdict(factories[name](**(options or {}))), default=str))


def config_drift(record: dict[str, Any] | None) -> dict[str, tuple[Any, Any]]:
    """The settings a finished record ran that its job would not run now: ``{setting: (ran, now)}``.

    A job's id holds its options and every default that differs from :data:`RECORDED_DEFAULTS`, so a record is
    only reused for the settings it ran, unless that file listed a default that the record's run did not have
    (the class search's ``classes_until_found``, before ``classes_first_round`` became the default: the same run
    wherever round 1 found a stamp, as its per-round rows show; without them, it cannot be told). Settings the
    record does not list did not exist when it ran: they ran as that file lists them (the behaviour before them),
    so a default changed since counts for them too. Settings that act
    only through the clean set's size do not count where they come to the same at the record's size. Empty for a
    record without a spec or config (not a grid record) and for one that ran what its job runs now.
    """
    record = record or {}
    spec, ran = record.get("spec"), record.get("config")
    if not spec or not ran:
        return {}
    name, now = _resolved_config(spec["method"], spec.get("ibau_preset", "default"), spec.get("options"))
    # a setting the record lacks ran as the file lists it (the behaviour before the setting existed), not as now
    listed = {k: v for k, v in _recorded_defaults().get(spec["method"], {}).get(name, {}).items() if k not in ran}
    ran = {**listed, **ran}
    drift = {k: (v, now[k]) for k, v in ran.items() if k not in ("seed", "device") and k in now and v != now[k]}
    inert = _inert_at_size(spec["method"], {**now, **ran}, now, None, spec.get("clean_size")) if drift else ()
    drift = {k: v for k, v in drift.items() if k not in inert}  # a size rule that comes to the same at this size
    rounds = record.get("rounds") or []
    if drift.get("patch_search") == ("classes_until_found", "classes_first_round") and rounds \
            and rounds[0].get("patch_pixels") is not None:
        del drift["patch_search"]  # round 1 found a stamp: no later round searched under either
    return drift


@functools.lru_cache(maxsize=1)
def _recorded_defaults() -> dict[str, Any]:
    return json.loads(RECORDED_DEFAULTS.read_text())


def _digest(spec: dict[str, Any]) -> str:
    return hashlib.sha1(json.dumps(spec, sort_keys=True, default=str).encode()).hexdigest()[:8]


def _slug(text: str) -> str:
    return "".join(ch if ch.isalnum() or ch in ".-" else "_" for ch in text)


@dataclass(frozen=True)
class TrainJob:
    """Train one poisoned (or, with attack ``"none"``, clean) model."""

    attack: str
    all_to_all: bool
    poison_ratio: float
    seed: int
    dataset: str
    arch: str
    epochs: int
    train_limit: int | None
    batch_size: int
    trigger_steps: int | None
    options: tuple[tuple[str, Any], ...] = ()

    @property
    def spec(self) -> dict[str, Any]:
        spec = dataclasses.asdict(self)
        if not self.options:  # ids of jobs without trigger options stay what they were before options existed
            spec.pop("options")
        else:
            spec["options"] = dict(self.options)
        return spec

    @property
    def id(self) -> str:
        mode = "-a2a" if self.all_to_all else ""
        return f"train-{_slug(self.attack)}{mode}-r{self.poison_ratio:g}-s{self.seed}-{_digest(self.spec)}"

    @property
    def needs_reference(self) -> bool:
        from ..attacks import ATTACKS, parse_attack

        if self.attack == "none":
            return False
        return any(ATTACKS[name].needs_reference for name, _ in parse_attack(self.attack, all_to_all=self.all_to_all))


@dataclass(frozen=True)
class DefendJob:
    """Run one defense on the model of ``train``."""

    train: TrainJob
    method: str
    clean_size: int
    seed: int
    options: tuple[tuple[str, Any], ...] = ()
    ibau_preset: str = "default"
    #: A job of a timing suite (Table 6): its seconds are compared with those of the other jobs of the same
    #: run, so it never reuses a record of another suite's (the same job run at another time, with other jobs
    #: beside it); False leaves the id of every other job as it was.
    timed: bool = False

    @property
    def spec(self) -> dict[str, Any]:
        spec = {"train": self.train.id, "method": self.method, "clean_size": self.clean_size, "seed": self.seed,
                "options": dict(self.options), "ibau_preset": self.ibau_preset}
        changed = changed_defaults(self.method, self.ibau_preset, dict(self.options), self.clean_size)
        return spec | ({"timed": True} if self.timed else {}) | ({"defaults": changed} if changed else {})

    @property
    def id(self) -> str:
        timed = "-timed" if self.timed else ""
        return (f"defend-{self.method}-{self.train.id[len('train-'):]}-c{self.clean_size}-s{self.seed}{timed}-"
                f"{_digest(self.spec)}")


@dataclass(frozen=True)
class Cell:
    """One cell of a suite's table: which job fills it and where it sits."""

    attack_label: str
    poison_ratio: float
    clean_size: int
    variant: str
    method: str
    seed: int
    job: DefendJob


@dataclass
class Plan:
    suite: Suite
    preset: Preset
    reference: TrainJob | None
    trains: list[TrainJob]
    cells: list[Cell] = field(default_factory=list)

    @property
    def defends(self) -> list[DefendJob]:
        seen: dict[str, DefendJob] = {}
        for c in self.cells:
            seen.setdefault(c.job.id, c.job)
        return list(seen.values())


def _train_job(preset: Preset, attack: str, all_to_all: bool, ratio: float, seed: int = 0,
               options: dict[str, Any] | None = None) -> TrainJob:
    opts = {**preset.attack_options.get(attack, {}), **(options or {})}
    return TrainJob(attack, all_to_all, ratio, seed, preset.dataset, preset.arch, preset.epochs, preset.train_limit,
                    preset.batch_size, preset.trigger_steps, tuple(sorted(opts.items())))


def expand(suite: Suite, preset: Preset) -> Plan:
    """Every job of ``suite`` at ``preset``, and the table cell each defend job fills.

    Poisoned models are trained with seed 0 (an attack entry's ``model_seed`` otherwise); the ``seeds`` of a
    suite vary the defense (its clean set draw, initialisation and batch order), so stability is measured on
    one model. A defense runs seeds
    ``0 .. suite.seeds_for(method) - 1``; a job's id does not depend on how many seeds there are.
    """
    ratios = suite.poison_ratios or [preset.poison_ratio]
    trains: dict[str, TrainJob] = {}
    cells: list[Cell] = []
    for entry in suite.attacks:
        label = Suite.label(entry)
        for ratio in ratios:
            train = _train_job(preset, entry["attack"], bool(entry.get("all_to_all", False)), ratio,
                               seed=entry.get("model_seed", 0), options=entry.get("options"))
            trains.setdefault(train.id, train)
            for fraction in suite.clean_sizes:
                clean_size = max(1, round(fraction * preset.clean_size))
                for variant, per_method in suite.variants.items():
                    for method in suite.defenses:
                        if variant and method not in per_method:
                            continue  # a variant only applies to the defenses it names
                        variant_options = dict(per_method.get(method, {}))
                        named = variant_options.pop("preset", preset.ibau_preset)
                        options = {**preset.defense_options.get(method, {}),
                                   **entry.get("defense_options", {}).get(method, {}), **variant_options}
                        for seed in range(suite.seeds_for(method)):
                            job = DefendJob(train, method, clean_size, seed, tuple(sorted(options.items())),
                                            named, timed=suite.metric == "time_to_effect")
                            cells.append(Cell(label, ratio, clean_size, variant, method, seed, job))
    needs_ref = any(t.needs_reference for t in trains.values())
    reference = _train_job(preset, "none", False, preset.poison_ratio) if needs_ref else None
    return Plan(suite, preset, reference, list(trains.values()), cells)


# --- running ---------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Context:
    out: str
    data_dir: str | None
    device: str | None
    threads: int | None = None


def model_dir(ctx: Context, job: TrainJob) -> Path:
    return Path(ctx.out) / "models" / job.id


def record_path(out: str | Path, job_id: str) -> Path:
    return Path(out) / "records" / f"{job_id}.json"


def _base_record(job_id: str, kind: str, ctx: Context) -> dict[str, Any]:
    _threads(ctx)  # first, so the record's environment names the thread count the job runs with
    return new_record(kind, id=job_id, status="ok", error=None)


def run_train(job: TrainJob, reference: TrainJob | None, ctx: Context) -> dict[str, Any]:
    from ..models.io import read_card
    from ..pipeline.defend import trigger_for
    from ..pipeline.train import train_poisoned

    def work() -> dict[str, Any]:
        ref = model_dir(ctx, reference) / "model.safetensors" if reference is not None and job.needs_reference else None
        result = train_poisoned(job.dataset, job.attack, model_dir(ctx, job), data_dir=ctx.data_dir,
                                poison_ratio=job.poison_ratio, epochs=job.epochs, arch=job.arch,
                                train_limit=job.train_limit, batch_size=job.batch_size, seed=job.seed,
                                device=ctx.device, resume=True, progress=False, all_to_all=job.all_to_all,
                                reference_model=ref, trigger_steps=job.trigger_steps,
                                trigger_options=dict(job.options) or None)
        card = read_card(model_dir(ctx, job) / "model.safetensors")
        done = {"test": result["test"], "train_size": result["train_size"], "num_classes": card.num_classes}
        norm = trigger_l2(trigger_for(card, None), tuple(card.input_shape))
        return done if norm is None else {**done, "trigger_l2": norm}

    return _recorded(ctx, {**_base_record(job.id, "train", ctx), "spec": job.spec}, work)


def trigger_l2(trigger, input_shape: tuple[int, ...]) -> float | None:
    """The ℓ2 norm of an additive trigger's change to a zero image (how the paper measures Trojan WM's 8.739,
    which I-BAU's norm bound Cδ is compared with); None for a clean model or a non-additive trigger.

    >>> from ibau.attacks import BadNets
    >>> round(trigger_l2(BadNets(target=0), (1, 8, 8)), 3)  # a 4×4 white square: 16 pixels of 1
    4.0
    """
    import torch

    if trigger is None or not trigger.additive:
        return None
    zero = torch.zeros(1, *input_shape)
    return float((trigger.apply(zero) - zero).norm())


def run_defend(job: DefendJob, ctx: Context) -> dict[str, Any]:
    import torch

    from ..defenses import defense_class
    from ..pipeline.artifacts import plot_delta
    from ..pipeline.defend import _pictures, build_defense, load_for_dataset, run_defense, trigger_for

    record = {**_base_record(job.id, "defend", ctx), "spec": job.spec, "method": job.method, "train_id": job.train.id,
              "attack": job.train.attack, "all_to_all": job.train.all_to_all, "poison_ratio": job.train.poison_ratio,
              "clean_size": job.clean_size, "seed": job.seed, "options": dict(job.options)}

    def work() -> dict[str, Any]:
        path = model_dir(ctx, job.train) / "model.safetensors"
        if not path.exists():
            raise FileNotFoundError(f"the poisoned model {path} is missing (its training job failed?)")
        net, card, clean, held = load_for_dataset(path, job.train.dataset, ctx.data_dir, False, job.clean_size, job.seed)
        trigger = trigger_for(card, None)
        # the suite preset names I-BAU's configuration; a defense without presets runs its defaults
        preset = job.ibau_preset if job.ibau_preset in defense_class(job.method).preset_names() else "default"
        defense = build_defense(job.method, card, preset=preset,
                                seed=job.seed, device=ctx.device, options=dict(job.options), data_dir=ctx.data_dir)
        result, before, after = run_defense(defense, net, clean, held, trigger, card.num_classes, progress=False,
                                            resume_dir=resume_dir(ctx.out, job.id))
        if result.extra.get("interrupted"):
            # Ctrl-C inside the defense: it returned its last finished round, which is not this job's result.
            # No record is written, so a re-run repeats the job, and the grid stops instead of moving on.
            raise KeyboardInterrupt(f"{job.id} interrupted")
        done = {"num_classes": card.num_classes, **defense_outcome(defense, result, before, after)}
        pictures = _pictures(result)
        if pictures and trigger is not None:
            art = Path(ctx.out) / "artifacts" / f"{job.id}.png"
            art.parent.mkdir(parents=True, exist_ok=True)
            plot_delta(pictures, trigger.apply(torch.zeros(1, *card.input_shape))[0], art)
            done["delta_png"] = str(art.relative_to(ctx.out))
        return done

    record = _recorded(ctx, record, work)
    if record["status"] == "ok":  # the record holds the result: the kept parts are no longer needed
        shutil.rmtree(resume_dir(ctx.out, job.id), ignore_errors=True)
    return record


def resume_dir(out: str | Path, job_id: str) -> Path:
    """Where a defend job keeps what a re-run resumes from until its record is written: Neural Cleanse's and TABOR's
    per-class searches, NAD's teacher, SAU's, FT-SAM's and ANP's last finished round, epoch or report (a few MB for the small VGG:
    a grid folder kept in git can carry them to the next machine)."""
    return Path(out) / "resume" / job_id


def _recorded(ctx: Context, record: dict[str, Any], work: Callable[[], dict[str, Any]]) -> dict[str, Any]:
    """Run a job's ``work`` (its result fields) and write its record; a failure becomes an error record."""
    t0, cpu0 = time.perf_counter(), time.process_time()
    try:
        with _quiet():
            record.update(work())
    except (ValueError, TypeError, RuntimeError, FileNotFoundError) as e:
        record.update(status="error", error=f"{type(e).__name__}: {e}", traceback=traceback.format_exc())
    record["seconds"] = time.perf_counter() - t0
    # CPU seconds of this process (all its threads): wall seconds far above them mean the job waited for
    # the CPU (other jobs) or was paused, which the 1-minute load at the end alone may not show
    record["load"] = {**_load(), "cpu_seconds": time.process_time() - cpu0}
    write_record(record_path(ctx.out, record["id"]), record)
    return record


def _load() -> dict[str, Any]:
    """The machine's load when a job ends (1-minute average, which covers the end of the job, and the CPU
    count): seconds measured under load are slower, and Table 6's page says so."""
    try:
        one_minute = os.getloadavg()[0]
    except (AttributeError, OSError):  # not on every platform
        one_minute = None
    return {"load_1min": one_minute, "cpus": os.cpu_count()}


@contextlib.contextmanager
def _quiet():
    """A job's own information lines (epochs, checkpoints) stay out of the grid's log: one line per job."""
    package = logging.getLogger("ibau")
    level = package.level
    package.setLevel(logging.WARNING)
    try:
        yield
    finally:
        package.setLevel(level)


def _threads(ctx: Context) -> None:
    if ctx.threads:
        import torch

        torch.set_num_threads(ctx.threads)


def manifest(plan: Plan) -> dict[str, Any]:
    """The suite, preset and cells of ``plan`` as data (what ``suites/<name>.json`` holds)."""
    return {"suite": dataclasses.asdict(plan.suite), "preset": dataclasses.asdict(plan.preset),
            "reference": plan.reference.id if plan.reference else None,
            "cells": [{"attack_label": c.attack_label, "poison_ratio": c.poison_ratio, "clean_size": c.clean_size,
                       "variant": c.variant, "method": c.method, "seed": c.seed, "job": c.job.id,
                       "train": c.job.train.id} for c in plan.cells]}


def save_manifest(out: Path, plan: Plan) -> Path:
    """The suite and preset of this run, so the report is built from the folder alone.

    A run of some of a suite's defenses or rows (``--defenses``, ``--attacks``) adds them to those of earlier
    runs of the same suite at the same preset (:func:`merge_manifests`), so running the columns or rows one at
    a time into one folder gives the same report as running them together."""
    path = out / "suites" / f"{plan.suite.name}.json"
    new = manifest(plan)
    if path.exists():
        try:
            new = merge_manifests(json.loads(path.read_text()), new)
        except (json.JSONDecodeError, KeyError, TypeError):
            logger.warning(f"{path} is unreadable; replacing it with this run's suite")
    return write_record(path, new)


def merge_manifests(old: dict[str, Any], new: dict[str, Any]) -> dict[str, Any]:
    """``new`` with the columns and rows (defenses, attacks and their cells) that ``old`` has and ``new`` lacks,
    when both are the same suite at the same preset apart from those; otherwise ``new`` (a changed suite
    replaces the old one). A preset's options of one defense (``defense_options``) belong to that column: a
    column of ``old`` whose options changed since is dropped, the others stay. Columns and rows keep the
    built-in suite's order (a suite file's: old ones first); cells keep ``old``'s order, ``new``'s own cells
    after them, and a cell in both takes ``new``'s job."""
    def rest(suite: dict[str, Any]) -> dict[str, Any]:
        return {k: v for k, v in suite.items() if k not in ("defenses", "method_seeds", "attacks")}

    def shared(preset: dict[str, Any]) -> dict[str, Any]:
        return {k: v for k, v in preset.items() if k != "defense_options"}

    if shared(old["preset"]) != shared(new["preset"]) or rest(old["suite"]) != rest(new["suite"]) \
            or None not in (old.get("reference"), new.get("reference")) and old["reference"] != new["reference"]:
        return new
    options = [p.get("defense_options", {}) for p in (old["preset"], new["preset"])]
    changed = {m for m in old["suite"]["defenses"] if options[0].get(m) != options[1].get(m)}
    if changed:  # those columns ran other options: only the new run's cells of them count
        old = dict(old, suite=dict(old["suite"], defenses=[m for m in old["suite"]["defenses"] if m not in changed]),
                   cells=[c for c in old["cells"] if c["method"] not in changed])
    from .suites import SUITES
    builtin = SUITES.get(new["suite"]["name"])

    def union(key: str, name: Callable[[Any], Any] = lambda x: x) -> list[Any]:
        seen = [name(x) for x in old["suite"][key]]
        both = old["suite"][key] + [x for x in new["suite"][key] if name(x) not in seen]
        order = [name(x) for x in getattr(builtin, key)] if builtin is not None else []
        if order and all(name(x) in order for x in both):
            both.sort(key=lambda x: order.index(name(x)))
        return both

    suite = dict(new["suite"], defenses=union("defenses"), attacks=union("attacks", Suite.label),
                 method_seeds={**old["suite"].get("method_seeds", {}), **new["suite"].get("method_seeds", {})})
    # a cell is a place in the table; where both have one, new's job fills it (a job whose id changed)
    def place(c: dict[str, Any]) -> tuple[Any, ...]:
        return tuple(c[k] for k in ("attack_label", "poison_ratio", "clean_size", "variant", "method", "seed"))

    fresh = {place(c): c for c in new["cells"]}
    cells = [fresh.pop(place(c), c) for c in old["cells"]] + list(fresh.values())
    return dict(new, suite=suite, cells=cells, reference=new.get("reference") or old.get("reference"))


def rejoin_labels(parts: list[str], labels: list[str]) -> list[str]:
    """``parts`` of a comma-separated list of row labels, with the pieces of a label that holds commas itself
    (``Trojan WM, model seed 1``) joined again: the longest run of consecutive pieces that is a label wins."""
    parts = [p.strip() for p in parts if p.strip()]
    out, i = [], 0
    while i < len(parts):
        j = next((j for j in range(len(parts), i, -1) if ", ".join(parts[i:j]) in labels), i + 1)
        out.append(", ".join(parts[i:j]))
        i = j
    return out


def bench_plan(suite: str | Suite, preset: str | Preset = "smoke", defenses: list[str] | None = None,
               attacks: list[str] | None = None) -> Plan:
    """``suite`` (a built-in name, a suite file or a :class:`Suite`) at ``preset``, expanded into jobs.

    ``defenses`` keeps only those columns of the suite and ``attacks`` only the rows with those labels (the
    jobs are the same as in a full run, so a later full run reuses them).
    """
    s = suite if isinstance(suite, Suite) else load_suite(suite)
    p = preset if isinstance(preset, Preset) else load_preset(preset)
    if defenses:
        missing = [d for d in defenses if d not in s.defenses]
        if missing:
            raise ValueError(f"suite {s.name} has no defense {', '.join(missing)}; its defenses are {', '.join(s.defenses)}")
    if attacks:
        labels = [Suite.label(a) for a in s.attacks]
        attacks = rejoin_labels(attacks, labels)
        missing = [a for a in attacks if a not in labels]
        if missing:
            raise ValueError(f"suite {s.name} has no row {', '.join(map(repr, missing))}; its rows are "
                             f"{', '.join(map(repr, labels))}")
    if defenses or attacks:
        s = s.only(defenses or None, attacks or None)
    plan = expand(s, p)
    logger.info(f"suite {s.name} at preset {p.name}: {len(plan.trains) + (plan.reference is not None)} models to train, "
                f"{len(plan.defends)} defense runs, {len(plan.cells)} table cells")
    return plan


# --- executors: how the jobs run --------------------------------------------------------------------
@dataclass(frozen=True)
class Task:
    """One unfinished job: ``fn(*args)`` runs it, writes its record and returns it. ``after`` names the jobs
    whose model it reads, for an executor that orders jobs by what they need rather than phase by phase."""

    id: str
    fn: Callable[..., dict[str, Any]]
    args: tuple[Any, ...]
    after: tuple[str, ...] = ()


class Executor(Protocol):
    """How a plan's jobs run (:class:`LocalExecutor`, ``ibau.bench.ray_executor.RayExecutor``)."""

    def context(self, out: Path, data_dir: str | None, device: str | None) -> Context:
        """What every job of this executor runs with (paths, device, torch threads)."""
        ...

    def run(self, phases: list[list[Task]]) -> Iterator[tuple[str, dict[str, Any]]]:
        """Run the tasks (a phase's tasks may need the earlier phases'); ``(job id, record)`` as each ends."""
        ...


@dataclass(frozen=True)
class LocalExecutor:
    """This machine, phase by phase: ``jobs == 1`` runs every job in this process with torch's own thread
    count; more run in a pool of ``jobs`` processes that share the CPUs (``cpus // jobs`` threads a job)."""

    jobs: int = 1

    def __post_init__(self) -> None:
        if self.jobs < 1:
            raise ValueError(f"--jobs must be >= 1, got {self.jobs}")

    def context(self, out: Path, data_dir: str | None, device: str | None) -> Context:
        threads = max(1, (os.cpu_count() or 1) // self.jobs) if self.jobs > 1 else None
        return Context(str(out), data_dir, device, threads)

    def run(self, phases: list[list[Task]]) -> Iterator[tuple[str, dict[str, Any]]]:
        for phase in phases:  # a phase starts when the one before has ended: no job waits on another
            yield from _execute(phase, self.jobs)


EXECUTORS = ("local", "ray")


def make_executor(name: str = "local", jobs: int = 1, address: str | None = None, cpus_per_job: float | None = None,
                  gpus_per_job: float | None = None, device: str | None = None) -> Executor:
    """The executor ``ibau bench --executor NAME`` names, from its options; the other executor's options are
    errors. Under Ray the cluster's free CPUs and GPUs decide how many jobs run at once, so ``jobs`` is local's."""
    if name == "local":
        given = [opt for opt, value in (("--address", address), ("--cpus-per-job", cpus_per_job),
                                        ("--gpus-per-job", gpus_per_job)) if value is not None]
        if given:
            raise ValueError(f"{', '.join(given)} only apply to --executor ray")
        return LocalExecutor(jobs)
    if name == "ray":
        if jobs != 1:
            raise ValueError("--jobs is for --executor local; under Ray as many jobs run at once as the cluster's CPUs "
                             "and GPUs hold (set what one job takes with --cpus-per-job/--gpus-per-job)")
        from .ray_executor import RayExecutor

        return RayExecutor.for_device(address, cpus_per_job, gpus_per_job, device)
    raise ValueError(f"unknown executor {name!r}; choose one of: {', '.join(EXECUTORS)}")


def run_plan(plan: Plan, out: str | Path, data_dir: str | None = None, device: str | None = None, jobs: int = 1,
             retry_errors: bool = False, executor: Executor | None = None) -> dict[str, int]:
    """Run every unfinished job of ``plan`` (trainings first, then defenses) with ``executor`` (default: this
    machine, ``jobs`` at a time: ``LocalExecutor(jobs)``).

    Returns counts: ``{"done": already finished, "ran": run now, "errors": failed now or before}``.
    """
    if executor is None:
        executor = LocalExecutor(jobs)
    elif jobs != 1:
        raise ValueError("give jobs or an executor, not both (jobs is LocalExecutor's)")
    if plan.preset.needs_data_dir and data_dir is None:
        raise ValueError(f"preset {plan.preset.name!r} uses dataset {plan.preset.dataset!r}, which needs --data-dir")
    if any(job.timed for job in plan.defends) and getattr(executor, "jobs", 1) > 1:
        logger.warning(f"suite {plan.suite.name} compares seconds, but --jobs {executor.jobs} runs its jobs at once "  # type: ignore[attr-defined]
                       "on shared CPUs; use --jobs 1 with nothing else running")
    out = Path(out)
    save_manifest(out, plan)
    counts = {"done": 0, "ran": 0, "errors": 0}
    phases = _phases(plan, executor.context(out, data_dir, device))
    total = sum(len(p) for p in phases)
    todo: list[list[Task]] = []
    for phase in phases:
        todo.append([])
        for task in phase:
            status = _status(out, task.id)
            if _left_to_run(status, retry_errors):
                todo[-1].append(task)
            else:
                counts["done"] += 1
                counts["errors"] += status != "ok"
    for job_id, record in executor.run(todo):
        counts["ran"] += 1
        counts["errors"] += record["status"] != "ok"
        logger.info(f"[{counts['done'] + counts['ran']}/{total}] {job_id}: {_summary(record)}")
    return counts


def _phases(plan: Plan, ctx: Context) -> list[list[Task]]:
    """The plan's jobs in the order the local executor runs them: the clean reference model (some triggers
    are optimised against it), the models, the defenses; each names the models it reads in ``after``."""
    ref = plan.reference
    phases = [[Task(ref.id, run_train, (ref, None, ctx))]] if ref is not None else []
    phases.append([Task(t.id, run_train, (t, ref, ctx), (ref.id,) if ref is not None and t.needs_reference else ())
                   for t in plan.trains])
    phases.append([Task(d.id, run_defend, (d, ctx), (d.train.id,)) for d in plan.defends])
    return phases


@dataclass(frozen=True)
class JobStatus:
    """Where one job of a plan stands in a bench folder (:func:`plan_status`).

    ``state``: ``"done"``, ``"error"`` (an error record), ``"started"`` (no record, but an interrupted run left
    a checkpoint or resume files it will continue from) or ``"todo"``. ``estimate`` is the median wall seconds
    of the folder's finished jobs of the same ``kind`` (``"train"``, or the defense's name) and clean-set size
    (any size where none has that one), None where there is none; those seconds were measured under whatever
    load their jobs ran with (each record's ``load``).
    """

    id: str
    kind: str
    state: str
    estimate: float | None = None


def plan_status(plan: Plan, out: str | Path, retry_errors: bool = False) -> list[JobStatus]:
    """Every job of ``plan`` (the order :func:`run_plan` runs them in) with its state in ``out`` and, for a
    job left to run, an estimate of its seconds from the records already there. Reads files only: what
    ``ibau bench --dry-run`` prints."""
    out = Path(out)
    seconds: dict[tuple[str, int | None], list[float]] = {}
    for path in sorted((out / "records").glob("*.json")):
        record = read_record(path)
        if record.get("status") == "ok" and isinstance(record.get("seconds"), int | float):
            kind = "train" if record.get("kind") == "train" else str(record.get("method"))
            for key in ((kind, record.get("clean_size")), (kind, None)):
                seconds.setdefault(key, []).append(float(record["seconds"]))
    ctx = Context(str(out), None, None)
    rows = []
    for task in (t for phase in _phases(plan, ctx) for t in phase):  # the jobs run_plan would run, in its order
        job = task.args[0]
        kind, clean_size, partial = (("train", None, model_dir(ctx, job)) if isinstance(job, TrainJob)
                                     else (job.method, job.clean_size, resume_dir(out, job.id)))
        status = _status(out, job.id)
        if not _left_to_run(status, retry_errors):
            rows.append(JobStatus(job.id, kind, "done" if status == "ok" else "error"))
            continue
        state = "started" if partial.is_dir() and any(partial.iterdir()) else "todo"
        times = sorted(seconds.get((kind, clean_size)) or seconds.get((kind, None), []))
        rows.append(JobStatus(job.id, kind, state, times[len(times) // 2] if times else None))
    return rows


def status_lines(rows: list[JobStatus]) -> list[str]:
    """``plan_status``'s rows as ``ibau bench --dry-run`` prints them: one line per job left to run, then a
    summary with the estimated hours."""
    left = [r for r in rows if r.state in ("todo", "started")]
    lines = [f"{r.state:<8} {r.id}  " + (f"~{r.estimate / 60:.0f} min" if r.estimate is not None else "no estimate")
             for r in left]
    known = [r.estimate for r in left if r.estimate is not None]
    done, errors = sum(r.state == "done" for r in rows), sum(r.state == "error" for r in rows)
    started = sum(r.state == "started" for r in left)
    summary = f"{done} done, {errors} errors, {len(left)} to run" + (
        f" ({started} started: they resume where they stopped)" if started else "")
    if left:
        summary += (f": about {sum(known) / 3600:.1f} h at the pace of this folder's finished jobs (median of each "
                    "kind, under the load they ran with)")
        if len(known) < len(left):
            summary += f"; {len(left) - len(known)} of a kind with no finished job not counted"
    return lines + [summary]


def _left_to_run(status: str | None, retry_errors: bool) -> bool:
    """Whether a job with this recorded status (:func:`_status`) runs: no record yet, or an error retried."""
    return status is None or (retry_errors and status != "ok")


def _status(out: Path, job_id: str) -> str | None:
    """A job's recorded status (``"ok"``, ``"error"``), or None when it has no record yet."""
    path = record_path(out, job_id)
    return read_record(path).get("status") if path.exists() else None


def _execute(todo: list[Task], jobs: int) -> Iterator[tuple[str, dict[str, Any]]]:
    if jobs == 1 or len(todo) <= 1:
        for task in todo:
            yield task.id, task.fn(*task.args)
        return
    import multiprocessing

    with ProcessPoolExecutor(max_workers=jobs, mp_context=multiprocessing.get_context("spawn")) as pool:
        futures = {pool.submit(task.fn, *task.args): task.id for task in todo}
        for future in as_completed(futures):
            yield futures[future], future.result()


def _summary(record: dict[str, Any]) -> str:
    if record["status"] != "ok":
        return f"ERROR {record['error']}"
    m = record.get("after") or record.get("test") or {}
    parts = [f"{k.upper()} {100 * m[k]:.1f}%" for k in ("acc", "asr") if k in m]
    return " ".join(parts) + f" ({record['seconds']:.0f}s)"
