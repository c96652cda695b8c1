"""Does the round probe track the backdoor? One markdown table of ``compare_presets.py`` records, per round.

    python benchmarks/probe_table.py docs/measurements/issue19/probe_rounds docs/measurements/issue19/probe_confirm
    python benchmarks/probe_table.py --summary docs/measurements/issue19/guard   # per model over its seeds
    python benchmarks/probe_table.py --all docs/measurements/issue19/stop44      # runs without a probe too

For each record (a configuration on one model and seed): held-out ACC/ASR after every round, the probe's share
of clean images sent to the suspect class (the library's ``probe_rate`` where the run used
``round_selection="probe"``, else the benchmark's targeted probe of ``--probe-bound``), the round the rule keeps
(recorded by runs with ``round_selection="probe"``; for the others, the library's rule applied to
the benchmark's probe: the latest round within ``probe_tolerance`` of the lowest share) and what keeping it gave against
keeping the last round. The suspect is the class the untargeted probe found before round 1; "target" is the
attack's, shown for evaluation only. A round the accuracy guard (``acc_guard``) rolled back is marked ↺: its
model is the round before's. With ``--all`` (``every=True``) the runs without a probe are listed as well, with
the round they returned (their last, or the guard's choice) and "–" for the probe.
"""
from __future__ import annotations

import json
import re
import statistics
import sys
from pathlib import Path

from ibau import IBAUConfig

#: the library's default, for records whose probe ran in the benchmark (no rule applied during the run)
TOLERANCE = IBAUConfig().probe_tolerance


def rates(rec: dict) -> tuple[list[float], int | None]:
    """The probe's share per round and the suspect class of a record, from the library or the benchmark."""
    if rec.get("suspect") is not None:
        return [c["probe_rate"] for c in rec["curve"]], rec["suspect"]
    before = rec.get("probe_before")
    if not before or "targeted" not in before:
        return [], None
    return [c["probe"]["targeted"]["to_target"] for c in rec["curve"]], before["top"]


def chosen(shares: list[float]) -> int:
    """The rule of ``round_selection="probe"``: the latest round within TOLERANCE of the lowest share (1-based)."""
    low = min(shares)
    return max(i for i, s in enumerate(shares) if s <= low + TOLERANCE) + 1


def rows(folders: list[Path], every: bool = False) -> list[dict]:
    """The records of ``folders`` that ran or recorded a probe (``every``: all of them)."""
    out = []
    for folder in folders:
        for path in sorted(folder.rglob("*.json")):
            rec = json.loads(path.read_text())
            if "curve" not in rec:  # not a run's record: the card of a digits model cached beside them
                continue
            shares, suspect = rates(rec)
            if not shares and not every:
                continue
            # what the run kept, or the rule applied to the benchmark's probes of a run that kept its last round
            cfg = rec["config"]
            ruled = cfg.get("round_selection") == "probe" or (cfg.get("acc_guard") is not None
                                                              and cfg.get("guard_mode") == "select")
            keep = rec["selected_round"] if ruled or not shares else chosen(shares)
            curve = rec["curve"]
            name = f"authors_{path.stem}" if rec["task"] == "authors" else path.stem
            out.append({"record": name, "target": _target(rec), "suspect": suspect,
                        "before_acc": 100 * rec["before"]["acc"], "before_asr": 100 * rec["before"]["asr"],
                        "acc": [100 * c["acc"] for c in curve], "asr": [100 * c["asr"] for c in curve],
                        "rolled_back": [bool(c.get("rolled_back")) for c in curve],
                        "shares": [100 * s for s in shares], "keep": keep})
    return out


def _target(rec: dict) -> str:
    if rec["task"] == "authors":
        return "8"
    if rec["task"] == "digits":
        from ibau.demo import demo_trigger
        return str(demo_trigger().target)
    trigger = Path(rec["model"]).parent / "trigger.json"
    if trigger.exists():
        target = json.loads(trigger.read_text()).get("target")
        return "–" if target is None else str(target)
    return "?"


def kept(r: dict) -> tuple[float, float]:
    """``(ASR, ACC)`` of the model the run returned: its kept round's, or the model as handed over where an
    accuracy guard with ``guard_mode="select"`` kept no round (``keep`` 0)."""
    if r["keep"] == 0:
        return r["before_asr"], r["before_acc"]
    return r["asr"][r["keep"] - 1], r["acc"][r["keep"] - 1]


def table(items: list[dict]) -> str:
    lines = ["| record | target / suspect | held-out ASR % per round | probe % per round | kept | ASR kept / last | "
             "ACC drop kept / last |", "|---|---|---|---|---:|---|---|"]
    for r in items:
        asr_kept, acc_kept = kept(r)
        asr = " → ".join(f"{a:.1f}{'↺' * back}" for a, back in zip(r["asr"], r["rolled_back"]))
        suspect = "–" if r["suspect"] is None else r["suspect"]
        lines.append(f"| {r['record']} | {r['target']} / {suspect} | {asr} "
                     f"| {' → '.join(f'{s:.1f}' for s in r['shares']) or '–'} | {r['keep']} of {len(r['asr'])} "
                     f"| {asr_kept:.1f} / {r['asr'][-1]:.1f} "
                     f"| {r['before_acc'] - acc_kept:.2f} / {r['before_acc'] - r['acc'][-1]:.2f} |")
    return "\n".join(lines)


def correlation(items: list[dict]) -> float:
    """Pearson r between the round-to-round changes of the probe's share and of the held-out ASR."""
    probed = [r for r in items if r["shares"]]
    dp = [b - a for r in probed for a, b in zip(r["shares"], r["shares"][1:])]
    da = [b - a for r in probed for a, b in zip(r["asr"], r["asr"][1:])]
    return statistics.correlation(dp, da) if len(dp) > 2 else float("nan")


def markdown(folders: list[Path], every: bool = False) -> str:
    """The table of every record in ``folders`` and the correlation of the probe's and the ASR's changes."""
    items = rows(folders, every)
    changes = sum(len(r['asr']) - 1 for r in items if r["shares"])
    if not changes:  # no run had a probe: no correlation to state
        return table(items)
    return (f"{table(items)}\n\nOver the {changes} round-to-round changes above{' with a probe' * every}, "
            f"the probe's share and the held-out ASR move together with r = {correlation(items):.2f}.")


def summary(folders: list[Path], asr_target: float = 10.0, drop_target: float = 2.0, every: bool = False) -> str:
    """One line per configuration and model over its seeds: the kept round's held-out ASR (mean ± std, worst)
    and ACC drop (mean, worst), and on how many seeds both of issue 19's targets hold (ASR ≤ ``asr_target``,
    drop ≤ ``drop_target`` points)."""
    groups: dict[str, list[dict]] = {}
    for r in rows(folders, every):
        groups.setdefault(re.sub(r"_seed\d+$", "", r["record"]), []).append(r)
    lines = ["| configuration and model | seeds | ASR kept % | ACC drop kept (points) | targets met |",
             "|---|---:|---|---|---:|"]
    for name, items in groups.items():
        asr = [kept(r)[0] for r in items]
        drop = [r["before_acc"] - kept(r)[1] for r in items]
        spread = f" ± {statistics.stdev(asr):.2f}" if len(asr) > 1 else ""
        met = sum(a <= asr_target and d <= drop_target for a, d in zip(asr, drop))
        lines.append(f"| {name} | {len(items)} | {statistics.mean(asr):.2f}{spread} ({max(asr):.2f}) "
                     f"| {statistics.mean(drop):.2f} ({max(drop):.2f}) | {met} of {len(items)} |")
    return "\n".join(lines)


def main() -> None:
    args = sys.argv[1:]
    every = "--all" in args
    folders = [Path(f) for f in args if not f.startswith("--")]
    print(summary(folders, every=every) if "--summary" in args else markdown(folders, every))


if __name__ == "__main__":
    main()
