"""Result records: every JSON result ibau writes (``ibau attack``/``defend``/``demo``/``evaluate`` and each
grid job) is built and read here, so they share one schema and one version.

A record is a plain dict with ``schema_version``, ``kind`` (``"train"``, ``"defend"`` or ``"evaluate"``),
the metric ``definitions`` and the ``environment`` (versions, threads), plus the fields of its kind. The
fields a defense's outcome has in every record come from :func:`defense_outcome`; ASR-like fields are
``None`` for a model without a trigger (a clean model). Writing is strict JSON (a value JSON cannot hold
is an error, not a string) and atomic; :func:`read_record` upgrades older versions and refuses newer ones.
Code that reads records (the bench report, :mod:`ibau.bench.aggregate`) reads their fields through the
accessors at the end of this module (:func:`is_ok`, :func:`measured`, :func:`metric`, :func:`checkpoints`,
:func:`outcome_failed`, ...), so the layout of a record is known here only.

>>> rec = new_record("evaluate", model="m.safetensors", acc=0.9)
>>> rec["schema_version"] == SCHEMA_VERSION, rec["kind"]
(True, 'evaluate')
"""
from __future__ import annotations

import dataclasses
import json
from pathlib import Path
from typing import Any

from .metrics import DEFINITIONS, der, failed
from .utils import environment

#: Version of the record layout. 1: grid records (``record_version``) and version-less run records.
SCHEMA_VERSION = 2
KINDS = ("train", "defend", "evaluate")


def new_record(kind: str, **fields: Any) -> dict[str, Any]:
    """A record of ``kind`` with the fields every record carries, then ``fields``."""
    if kind not in KINDS:
        raise ValueError(f"unknown record kind {kind!r}; one of: {', '.join(KINDS)}")
    return {"schema_version": SCHEMA_VERSION, "kind": kind, **fields, "definitions": DEFINITIONS,
            "environment": environment()}


def defense_outcome(defense, result, before: dict[str, float], after: dict[str, float]) -> dict[str, Any]:
    """The fields of a defense run that every defend record has (CLI, demo and grid alike)."""
    return {
        "method": defense.name, "interrupted": bool(result.extra.get("interrupted", False)),
        "before": before, "after": after, "der": der(before, after), "failed": failed(before, after),
        "defense_seconds": result.seconds, "time_to_effect": result.time_to_effect,
        "acc_at_effect": result.acc_at_effect, "history": result.history, "flagged": result.flagged,
        "anomaly": result.anomaly, "config": config_dict(defense),
        "details": result.details(), "rounds": round_rows(result),
    }


def round_rows(result) -> list[dict[str, Any]]:
    """A round-based defense's per-round diagnostics (``extra["rounds"]``: I-BAU's δ norm, fooling rates,
    stamp, seconds of the δ search…), each merged with the evaluation of its checkpoint (ACC/ASR)."""
    rows = []
    for r in result.extra.get("rounds", []):
        steps = (r.get("round"), f"round {r.get('round')}")  # I-BAU checkpoints round n as n, UAP-AT as "round n"
        checkpoint: dict[str, Any] = next((h for h in result.history if h.get("step") in steps), {})
        rows.append({**r, **{k: v for k, v in checkpoint.items() if k != "step"}})
    return rows


def write_record(path: str | Path, record: dict[str, Any]) -> Path:
    """Write ``record`` as JSON, atomically (an interrupted write never leaves half a file)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    text = json.dumps(_plain(record, "record"), indent=2, allow_nan=True) + "\n"
    tmp = path.with_suffix(".tmp")
    tmp.write_text(text)
    tmp.replace(path)
    return path


def read_record(path: str | Path) -> dict[str, Any]:
    """Read a record, upgraded to :data:`SCHEMA_VERSION`; a newer or unreadable one is a one-line error."""
    path = Path(path)
    try:
        record = json.loads(path.read_text())
    except json.JSONDecodeError as exc:
        raise ValueError(f"{path} is not a JSON record ({exc.msg} at line {exc.lineno}); delete it to re-run its job") from None
    if not isinstance(record, dict):
        raise ValueError(f"{path} is not a record (a JSON object); delete it to re-run its job")
    return upgrade(record, str(path))


def upgrade(record: dict[str, Any], where: str = "record") -> dict[str, Any]:
    version = record.get("schema_version", record.get("record_version", 1))
    if not isinstance(version, int) or version > SCHEMA_VERSION:
        raise ValueError(f"{where} has schema version {version!r}, newer than this ibau's {SCHEMA_VERSION}; "
                         "upgrade ibau to read it")
    if version < 2:  # v1: grid records named the version record_version; run records had none
        record = {k: v for k, v in record.items() if k != "record_version"}
        record = {"schema_version": SCHEMA_VERSION, **record}
    return record


def _plain(value: Any, where: str) -> Any:
    """``value`` as JSON types; tuples become lists, Paths strings, 0-d tensors/NumPy scalars numbers."""
    if value is None or isinstance(value, (bool, int, str)):
        return value
    if isinstance(value, float):
        return value
    if isinstance(value, Path):
        return str(value)
    if isinstance(value, dict):
        return {str(k): _plain(v, f"{where}.{k}") for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v, f"{where}[{i}]") for i, v in enumerate(value)]
    if hasattr(value, "item") and getattr(value, "ndim", None) == 0:  # a 0-d tensor or a NumPy scalar
        return value.item()
    raise TypeError(f"{where} is a {type(value).__name__}, which a JSON record cannot hold; convert it first")


def config_dict(defense) -> dict[str, Any]:
    """A defense's config as a plain dict (I-BAU's ``to_dict``, a baseline's dataclass fields)."""
    cfg = defense.config
    return cfg.to_dict() if hasattr(cfg, "to_dict") else dataclasses.asdict(cfg)


# --- reading a record's fields ----------------------------------------------------------------------
# The accessors report code reads records through (``ibau.bench.aggregate``), so the layout of a record is
# known here only. Each takes ``None`` (a job without a record yet) as well as a record.
def status(record: dict[str, Any] | None) -> str:
    """``"ok"``, ``"error"``, or ``"pending"`` for a job not recorded yet (no record, or one without a status)."""
    return str((record or {}).get("status", "pending"))


def is_ok(record: dict[str, Any] | None) -> bool:
    """Whether the job ran to the end (a record with status ``"ok"``)."""
    return record is not None and record.get("status") == "ok"


def measured(record: dict[str, Any] | None, when: str = "after") -> dict[str, float]:
    """The held-out metrics of a defend record ``"before"`` or ``"after"`` the defense (``{}`` if none).

    >>> measured({"before": {"acc": 0.9, "asr": 1.0}}, "before")["asr"]
    1.0
    """
    if when not in ("before", "after"):
        raise ValueError(f"when is 'before' or 'after', got {when!r}")
    return (record or {}).get(when) or {}


def metric(record: dict[str, Any] | None, key: str, when: str = "after") -> float | None:
    """One metric (``"acc"``, ``"asr"``, ``"ra"``, ``"asr:<trigger>"``) before/after, None if not measured."""
    return measured(record, when).get(key)


def has_asr(record: dict[str, Any] | None, when: str = "after") -> bool:
    """Whether the model had a trigger to measure (a clean model's record has ACC only)."""
    return "asr" in measured(record, when)


def trigger_keys(record: dict[str, Any] | None, when: str = "before") -> list[str]:
    """The per-trigger ASR keys (``"asr:<name>"``) of a multi-trigger attack, in the record's order."""
    return [k for k in measured(record, when) if k.startswith("asr:")]


def checkpoints(record: dict[str, Any] | None) -> list[dict[str, float]]:
    """The held-out metrics at every checkpoint: before the defense (at 0 s), then each evaluated entry of
    its history (entries without an ACC are skipped)."""
    if record is None:
        return []
    history = record.get("history") or []
    return [{"seconds": 0.0, **measured(record, "before")}] + [h for h in history if "acc" in h]


def _outcome(record: dict[str, Any] | None, key: str, rule):
    """``record[key]`` when recorded, else ``rule(before, after)``; None without a record or an ACC."""
    if record is None:
        return None
    if key in record:
        return record[key]
    before = measured(record, "before")
    return rule(before, measured(record, "after")) if "acc" in before else None


def outcome_failed(record: dict[str, Any] | None) -> bool | None:
    """The paper's failure rule for this run (:func:`ibau.metrics.failed`): the recorded verdict, or the
    rule applied to before/after for a record without one; None for a clean model or no record."""
    return _outcome(record, "failed", failed)


def outcome_der(record: dict[str, Any] | None) -> float | None:
    """The run's DER (:func:`ibau.metrics.der`): the recorded one, or computed from before/after."""
    return _outcome(record, "der", der)


def time_to_effect(record: dict[str, Any] | None) -> float | None:
    """Defense seconds until held-out ASR first fell below 20%; None if never (or no record)."""
    return (record or {}).get("time_to_effect")


def defense_seconds(record: dict[str, Any] | None) -> float | None:
    """The defense's own time, evaluation excluded."""
    return (record or {}).get("defense_seconds")


def num_classes(record: dict[str, Any] | None, default: int = 10) -> int:
    return int((record or {}).get("num_classes", default))


def versions(record: dict[str, Any] | None) -> dict[str, Any]:
    """The environment the record was made in (``ibau``, ``torch``, threads, ...); ``{}`` if none."""
    return (record or {}).get("environment") or {}


def delta_picture(record: dict[str, Any] | None) -> str | None:
    """The recovered-δ picture of a grid job, relative to its bench folder, if it drew one."""
    return (record or {}).get("delta_png") or None


def error_text(record: dict[str, Any] | None) -> str | None:
    """Why a job could not run (its error's first line), or None for a finished or unrecorded job."""
    if record is None or is_ok(record):
        return None
    return str(record.get("error") or "unknown error").splitlines()[0]


def trigger_l2(record: dict[str, Any] | None) -> float | None:
    """A train record's trigger norm: the ℓ2 norm of its change to a zero image (None if not recorded)."""
    value = (record or {}).get("trigger_l2")
    return None if value is None else float(value)


def load(record: dict[str, Any] | None) -> float | None:
    """The machine's 1-minute load average when the job ended (None if not recorded)."""
    value = ((record or {}).get("load") or {}).get("load_1min")
    return None if value is None else float(value)


def cpus(record: dict[str, Any] | None) -> int | None:
    """The machine's CPU count when the job ran (None if not recorded)."""
    value = ((record or {}).get("load") or {}).get("cpus")
    return None if value is None else int(value)
