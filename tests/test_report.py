"""`ibau report` as data → tables → pictures → page (issue 16): every table kind built from a few hand-written
records (no training), the paper's numbers in one place, and matplotlib imported only to draw."""
from __future__ import annotations

import csv
import importlib.util
import json
import subprocess
import sys
from pathlib import Path

import pytest

from ibau import records
from ibau.bench import SUITES, paper, tables
from ibau.bench import aggregate as agg
from ibau.bench.report import build_report
from ibau.metrics import der, failed

ROOT = Path(__file__).resolve().parents[1]


# --- fixtures: records and runs by hand ------------------------------------------------------------
def rec(before: dict, after: dict | None = None, status: str = "ok", **extra) -> dict:
    """A defend record as the grid writes it (only the fields a report reads)."""
    r = {"schema_version": records.SCHEMA_VERSION, "kind": "defend", "status": status, "num_classes": 10,
         "environment": {"ibau": "9.9", "torch": "t"}}
    if status == "ok":
        assert after is not None
        r.update(before=before, after=after, der=der(before, after), failed=failed(before, after),
                 defense_seconds=10.0, time_to_effect=None, history=[])
    else:
        r["error"] = "RuntimeError: boom"
    return {**r, **extra}


def cell(method: str, record: dict | None, seed: int = 0, label: str = "BadNets", variant: str = "",
         clean_size: int = 5000, poison_ratio: float = 0.2) -> dict:
    return {"attack_label": label, "poison_ratio": poison_ratio, "clean_size": clean_size, "variant": variant,
            "method": method, "seed": seed, "job": f"defend-{method}-{label}-{variant}-{seed}", "train": f"train-{label}",
            "record": record}


def run(cells: list[dict], defenses: list[str], metric: str = "acc_asr", paper_key: str = "", dataset: str = "npz",
        seeds: int = 1, variants: dict | None = None, name: str = "s") -> dict:
    return {"suite": {"name": name, "title": name.title(), "defenses": defenses, "metric": metric, "paper": paper_key,
                      "seeds": seeds, "variants": variants or {"": {}}},
            "preset": {"name": "cpu", "dataset": dataset, "clean_size": 5000, "arch": "small_vgg", "epochs": 12},
            "reference": None, "cells": cells}


BADNETS = {"acc": 0.85, "asr": 0.99}
BLEND = {"acc": 0.80, "asr": 1.0}


def table1_run(dataset: str = "npz") -> dict:
    """Two rows, three defenses, two seeds: a seed that failed, a missing seed, errors, a complete row."""
    return run([
        cell("ibau", rec(BADNETS, {"acc": 0.84, "asr": 0.10}), 0), cell("ibau", rec(BADNETS, {"acc": 0.82, "asr": 0.12}), 1),
        cell("nad", rec(BADNETS, {"acc": 0.84, "asr": 0.05}), 0), cell("nad", rec(BADNETS, {"acc": 0.84, "asr": 0.25}), 1),
        cell("dp", rec(BADNETS, {"acc": 0.30, "asr": 0.0}), 0), cell("dp", None, 1),
        cell("ibau", rec(BLEND, {"acc": 0.79, "asr": 0.03}), 0, "Blend"),
        cell("ibau", rec(BLEND, {"acc": 0.79, "asr": 0.05}), 1, "Blend"),
        cell("nad", rec(BLEND, {"acc": 0.795, "asr": 0.02}), 0, "Blend"),
        cell("nad", rec(BLEND, {"acc": 0.795, "asr": 0.02}), 1, "Blend"),
        cell("dp", rec(BLEND, status="error"), 0, "Blend"), cell("dp", rec(BLEND, status="error"), 1, "Blend"),
    ], ["ibau", "nad", "dp"], paper_key="table1", dataset=dataset, seeds=2, name="one_trigger")


# --- acc / asr -------------------------------------------------------------------------------------
def test_acc_asr_rows_are_means_and_stds_over_seeds_with_the_failure_rule_and_der():
    badnets, blend = agg.acc_asr_rows(table1_run())
    ibau = badnets.after["ibau"]
    assert ibau.state == "ok" and ibau.finished == 2 and ibau.missing == 0
    assert ibau.acc.mean == pytest.approx(0.83) and ibau.acc.std == pytest.approx(0.0141421, abs=1e-6)
    assert ibau.asr.mean == pytest.approx(0.11) and ibau.failed is False
    assert ibau.der.values == pytest.approx((0.94, 0.92)) and ibau.der.mean == pytest.approx(0.93)
    nad = badnets.after["nad"]
    assert nad.acc.std == 0.0 and nad.asr.mean == pytest.approx(0.15) and nad.failed is True  # one seed at 25% ASR
    dp = badnets.after["dp"]
    assert (dp.state, dp.finished, dp.missing, dp.failed) == ("ok", 1, 1, True)  # lost 55 ACC points
    assert dp.acc.std is None and dp.acc.values == (0.30,)
    assert badnets.before.acc.mean == pytest.approx(0.85) and badnets.before.failed is None
    assert blend.after["dp"].state == "error" and blend.after["dp"].acc is None
    assert badnets.verdict == agg.Verdict("pending")  # dp's second seed has not run
    assert blend.verdict.kind == "comparable" and blend.verdict.best == "nad"
    assert (blend.verdict.best_acc, blend.verdict.best_asr) == pytest.approx((0.795, 0.02))
    p = badnets.paper
    assert (p.none, p.ibau, p.best) == ((84.94, 98.28), (83.35, 12.30), ("tabor", 83.78, 8.12))
    assert p.columns["tabor"] == (83.78, 8.12) and p.columns["nad"] == (78.72, 11.66)  # every column of Table 1


def test_acc_asr_table_text_with_the_papers_columns_beside():
    table = tables.table_for(table1_run())
    assert table.headers == ["attack label", "no defense", "ibau", "nad", "dp", "paper: no defense", "paper: I-BAU",
                             "paper: best baseline", "I-BAU vs best baseline"]
    assert table.rows[0] == ["BadNets", "85.00±0.00 / 99.00±0.00", "83.00±1.41 / 11.00±1.41", "84.00±0.00 / 15.00±14.14 ✗",
                             "30.00 / 0.00 ✗ (1 missing)", "84.94 / 98.28", "83.35 / 12.30", "tabor 83.78 / 8.12",
                             "pending"]
    assert table.rows[1] == ["Blend", "80.00±0.00 / 100.00±0.00", "79.00±0.00 / 4.00±1.41", "79.50±0.00 / 2.00±0.00",
                             "error", "84.82 / 99.78", "82.30 / 12.96", "–",
                             "comparable or better (best: nad 79.50 / 2.00)"]
    md = table.markdown()
    assert md.startswith("### One_Trigger — ACC / ASR % on held-out test images, preset cpu\n\n| attack label |")
    assert "|---|---:|" in md and "the paper's rule" in md
    digits = tables.table_for(table1_run(dataset="digits"))  # no CIFAR-10 numbers beside another dataset
    assert not any(h.startswith("paper") for h in digits.headers) and len(digits.rows[0]) == 6


def test_the_papers_verdict_rule():
    def row(**after):
        return {m: [cell(m, rec(BADNETS, {"acc": a, "asr": s}))] for m, (a, s) in after.items()}

    v = agg.verdict(row(ibau=(0.835, 0.12), nad=(0.84, 0.09), dp=(0.30, 0.0)))  # dp loses 55 points: no candidate
    assert (v.kind, v.best) == ("comparable", "nad")
    assert agg.verdict(row(ibau=(0.835, 0.12), nad=(0.84, 0.05))).kind == "worse"  # 7 ASR points above, over chance
    assert agg.verdict(row(ibau=(0.80, 0.08), nad=(0.84, 0.05))).kind == "comparable"  # ASR at chance (1/10)
    assert agg.verdict(row(ibau=(0.80, 0.08), dp=(0.30, 0.0))).kind == "better"
    # the paper's claim is about the paper's baselines: a later one (ANP) beside them is not the best baseline
    v = agg.verdict(row(ibau=(0.835, 0.12), nad=(0.84, 0.09), anp=(0.84, 0.01)))
    assert (v.kind, v.best) == ("comparable", "nad")
    # ... so a row is judged once the paper's baselines have run, whether or not ANP has; not before
    waiting = {**row(ibau=(0.835, 0.12), nad=(0.84, 0.09)), "anp": [cell("anp", None)]}
    assert (agg.verdict(waiting).kind, agg.verdict(waiting).best) == ("comparable", "nad")
    assert agg.verdict({**row(ibau=(0.835, 0.12), anp=(0.84, 0.01)), "nad": [cell("nad", None)]}).kind == "pending"
    assert tables.verdict_text(agg.verdict(row(ibau=(0.80, 0.08), dp=(0.30, 0.0)))) == \
        "better (every baseline loses > 10 ACC points)"
    clean = {"ibau": [cell("ibau", rec({"acc": 0.9}, {"acc": 0.89}))], "nad": [cell("nad", None)]}
    assert agg.verdict(clean).kind == "none" and tables.compare_with_best(clean) == "–"


def test_a_clean_models_cell_has_acc_only():
    r = rec({"acc": 0.9}, {"acc": 0.88})
    assert r["der"] is None and r["failed"] is None
    s = agg.summarize([cell("ibau", r)])
    assert s.asr is None and s.failed is None and s.der is None and tables.summary_text(s) == "88.00"


def test_records_without_a_verdict_get_the_metrics_rule():
    r = rec(BADNETS, {"acc": 0.70, "asr": 0.05})
    del r["failed"], r["der"]  # computed from before/after by ibau.metrics, as the grid records them
    assert records.outcome_failed(r) is True  # 15 ACC points lost
    assert records.outcome_der(r) == pytest.approx((0.94 - 0.15 + 1) / 2)
    assert records.outcome_failed(None) is None and records.status(None) == "pending"


def gtsrb(r: dict, classes: int = 43) -> dict:
    """``r`` on GTSRB: dataset "gtsrb" and every record with ``classes`` classes."""
    for c in r["cells"]:
        if c["record"] is not None:
            c["record"] = {**c["record"], "num_classes": classes}
    return {**r, "preset": {**r["preset"], "name": "cpu_gtsrb", "dataset": "gtsrb"}}


def test_a_gtsrb_run_stands_beside_table_2_and_a_cifar_run_beside_table_1():
    cifar, gt = table1_run(), gtsrb(table1_run())
    assert (agg.paper_dataset(cifar), agg.paper_table(cifar)) == ("cifar10", "table1")
    assert (agg.paper_dataset(gt), agg.paper_table(gt)) == ("gtsrb", "table2")
    badnets = agg.acc_asr_rows(gt)[0].paper
    assert (badnets.none, badnets.ibau, badnets.best) == ((97.69, 99.18), (99.38, 3.32), ("tabor", 98.99, 4.16))
    assert badnets.columns["nad"] == (15.19, 9.08) and "none" not in badnets.columns
    assert agg.acc_asr_rows(gt)[1].paper.best is None  # Blend on GTSRB: every baseline failed
    assert agg.acc_asr_rows(cifar)[0].paper.columns["neural_cleanse"] == (83.42, 8.76)
    table = tables.table_for(gt)
    assert table.rows[0][5:8] == ["97.69 / 99.18", "99.38 / 3.32", "tabor 98.99 / 4.16"]
    # GTSRB as a plain npz file, or a "gtsrb" folder with another class count: no paper beside it
    for other in (gtsrb(table1_run(), 43) | {"preset": {**cifar["preset"], "dataset": "npz"}}, gtsrb(table1_run(), 10)):
        assert agg.paper_dataset(other) is None and agg.paper_row(other, other["cells"][0]) is None
    empty = gtsrb(run([cell("ibau", None)], ["ibau"], paper_key="table1"))  # no record yet: the dataset's count
    assert agg.paper_table(empty) == "table2"


def test_the_verdict_takes_chance_from_the_class_count():
    def row(classes: int) -> dict:
        ibau, nad = rec(BADNETS, {"acc": 0.80, "asr": 0.08}), rec(BADNETS, {"acc": 0.84, "asr": 0.02})
        return {"ibau": [cell("ibau", {**ibau, "num_classes": classes})],
                "nad": [cell("nad", {**nad, "num_classes": classes})]}

    assert agg.verdict(row(10)).kind == "comparable"  # 8% ASR is at CIFAR-10's chance (10%)
    assert agg.verdict(row(43)).kind == "worse"  # but not at GTSRB's (2.3%)


def test_gtsrb_numbers_of_tables_3_and_6():
    before = {"acc": 0.97, "asr": 0.99, "asr:badnets": 0.98}
    cells = [cell("ibau", rec(before, {"acc": 0.98, "asr": 0.04, "asr:badnets": 0.01}, time_to_effect=3.0))]
    multi = gtsrb(run(cells, ["ibau"], metric="per_trigger", paper_key="table3"))
    assert tables.table_for(multi).notes == ["Paper (Table 3, GTSRB): no defense 97.18 / 99.37, I-BAU 99.09 / 4.18, "
                                             "NAD 10.83 / 11.59 (ACC / mean ASR)."]
    assert agg.paper_metrics(multi)["asr:badnets"]["ibau"] == 0.72
    assert agg.paper_metrics(table1_run()) == {}  # not Table 3
    effect = gtsrb(run(cells, ["ibau"], metric="time_to_effect", paper_key="table6"))
    assert agg.effect_rows(effect)[0].paper_seconds == 7.8
    digits = run(cells, ["ibau"], metric="time_to_effect", paper_key="table6", dataset="digits")
    assert agg.effect_rows(digits)[0].paper_seconds is None  # no paper seconds beside another dataset


# --- per trigger -----------------------------------------------------------------------------------
def test_per_trigger_table():
    before = {"acc": 0.9, "asr": 0.95, "asr:blend": 1.0, "asr:badnets": 0.9, "ra:badnets": 0.05}
    cells = [cell("ibau", rec(before, {"acc": 0.88, "asr": 0.05, "asr:blend": 0.06, "asr:badnets": 0.04})),
             cell("nad", rec(before, {"acc": 0.86, "asr": 0.15, "asr:blend": 0.2, "asr:badnets": 0.1}), 0),
             cell("nad", rec(before, {"acc": 0.84, "asr": 0.25, "asr:blend": 0.3, "asr:badnets": 0.2}), 1),
             cell("dp", rec(before, status="error")), cell("finetune", None)]
    r = run(cells, ["ibau", "nad", "dp", "finetune", "tabor"], metric="per_trigger", paper_key="table3", seeds=2)
    rows = agg.per_trigger_rows(r)
    assert [row.key for row in rows] == ["acc", "asr", "asr:badnets", "asr:blend"]
    assert rows[2].before == 0.9 and rows[2].stat("nad").mean == pytest.approx(0.15)
    assert rows[3].stat("nad").std == pytest.approx(0.0707107, abs=1e-6)
    table = tables.table_for(r)
    assert table.headers == ["metric", "no defense", "ibau", "nad", "dp", "finetune", "tabor"]
    assert table.rows == [
        ["clean ACC", "90.00", "88.00", "85.00±1.41", "error", "pending", "pending"],
        ["mean ASR", "95.00", "5.00", "20.00±7.07", "error", "pending", "pending"],
        ["ASR badnets", "90.00", "4.00", "15.00±7.07", "error", "pending", "pending"],
        ["ASR blend", "100.00", "6.00", "25.00±7.07", "error", "pending", "pending"]]
    assert table.notes == ["Paper (Table 3, CIFAR-10): no defense 85.96 / 98.37, I-BAU 77.44 / 12.96, "
                           "NAD 77.38 / 10.93 (ACC / mean ASR)."]


# --- time to effect --------------------------------------------------------------------------------
def test_time_to_effect_table():
    after = {"acc": 0.84, "asr": 0.05}
    cells = [cell("ibau", rec(BADNETS, after, time_to_effect=2.0, defense_seconds=5.0), 0),
             cell("ibau", rec(BADNETS, after, time_to_effect=4.0, defense_seconds=7.0), 1),
             cell("neural_cleanse", rec(BADNETS, after, time_to_effect=30.0, defense_seconds=40.0)),
             cell("fine_pruning", rec(BADNETS, {"acc": 0.84, "asr": 0.5}, defense_seconds=12.0)),
             cell("tabor", None)]
    r = run(cells, ["ibau", "neural_cleanse", "fine_pruning", "tabor"], metric="time_to_effect", paper_key="table6")
    rows = {row.method: row for row in agg.effect_rows(r)}
    assert rows["ibau"].time_to_effect.mean == 3.0 and rows["ibau"].times_ibau == 1.0
    assert rows["neural_cleanse"].times_ibau == 10.0 and rows["neural_cleanse"].paper_seconds == 384.9
    assert rows["fine_pruning"].time_to_effect is None and rows["fine_pruning"].after.failed is True
    assert [(b.method, b.seconds, b.never) for b in agg.effect_bars(r)] == [
        ("ibau", 3.0, False), ("neural_cleanse", 30.0, False), ("fine_pruning", 12.0, True)]
    table = tables.table_for(r)
    assert table.headers == ["method", "seconds to effect", "× I-BAU", "defense s", "final ACC / ASR %", "paper s (GPU)"]
    assert table.rows == [["ibau", "3.0", "1.0", "6.0", "84.00±0.00 / 5.00±0.00", "6.8"],
                          ["neural_cleanse", "30.0", "10.0", "40.0", "84.00 / 5.00", "384.9"],
                          ["fine_pruning", "never", "–", "12.0", "84.00 / 50.00 ✗", "45.3"],
                          ["tabor", "pending", "–", "–", "–", "1123.3"]]


# --- stability over seeds ----------------------------------------------------------------------------
def _seeded(method: str, seed: int, points: list[tuple[float, float]], label: str = "BadNets") -> dict:
    history = [{"round": i, "seconds": float(i + 1), "acc": a, "asr": s} for i, (a, s) in enumerate(points)]
    history.insert(1, {"round": 0, "note": "not evaluated"})  # entries without ACC are not checkpoints
    acc, asr = points[-1]
    return cell(method, rec(BADNETS, {"acc": acc, "asr": asr}, history=history), seed, label)


def stability_run() -> dict:
    cells = [_seeded("ibau", 0, [(0.84, 0.30), (0.83, 0.10)]), _seeded("ibau", 1, [(0.82, 0.50), (0.81, 0.20)]),
             _seeded("ibau", 2, [(0.80, 0.40)]),  # a shorter run: the series stops at the shortest
             cell("uap_at", None, 0), cell("uap_at", None, 1), cell("uap_at", None, 2)]
    return run(cells, ["ibau", "uap_at"], seeds=3, name="stability")


def test_stability_over_seeds():
    r = stability_run()
    series = agg.stability_series(r)
    assert list(series) == ["ibau"] and series["ibau"].seeds == 3  # uap_at has not run
    asr = series["ibau"].metrics["asr"]
    assert len(asr) == 2  # before, then the one checkpoint every seed has
    assert asr[0].values == (0.99, 0.99, 0.99) and asr[1].mean == pytest.approx(0.4)
    assert asr[1].percent().std == pytest.approx(10.0)
    assert series["ibau"].metrics["acc"][1].mean == pytest.approx(0.82)
    table = tables.table_for(r)
    assert table.rows == [["BadNets", "85.00±0.00 / 99.00±0.00", "81.33±1.53 / 23.33±15.28 ✗", "pending",
                           "pending"]]


# --- variants ----------------------------------------------------------------------------------------
def variants_run() -> dict:
    variants = {"Cδ=0.5": {"ibau": {"norm_bound": 0.5}}, "Cδ=10": {"ibau": {"norm_bound": 10.0}},
                "Cδ=none": {"ibau": {"norm": "none"}}}
    cells = [cell("ibau", rec(BADNETS, {"acc": 0.84, "asr": 0.6}), 0, variant="Cδ=0.5"),
             cell("ibau", rec(BADNETS, {"acc": 0.83, "asr": 0.1}), 0, variant="Cδ=10"),
             cell("ibau", rec(BADNETS, {"acc": 0.81, "asr": 0.2}), 1, variant="Cδ=10"),
             cell("ibau", None, 0, variant="Cδ=none")]
    return run(cells, ["ibau"], variants=variants, seeds=2, name="norm_bound")


def test_variants():
    r = variants_run()
    rows = agg.variant_rows(r)
    assert [row.variant for row in rows] == ["Cδ=0.5", "Cδ=10"]  # Cδ=none has not run
    assert rows[1].after.acc.mean == pytest.approx(0.82) and rows[1].after.asr.mean == pytest.approx(0.15)
    table = tables.table_for(r)
    assert table.headers == ["variant", "no defense", "ibau"]  # I-BAU alone: no verdict
    assert table.rows == [["Cδ=0.5", "85.00 / 99.00", "84.00 / 60.00 ✗"],
                          ["Cδ=10", "85.00±0.00 / 99.00±0.00", "82.00±1.41 / 15.00±7.07 ✗"],
                          ["Cδ=none", "pending", "pending"]]
    assert agg.variant_rows(table1_run()) == []  # a suite without variants


def test_a_grid_of_attacks_ends_with_each_defenses_mean_der():
    """BackdoorBench's grid figure: per defense, the mean over rows of the mean DER over seeds; '–' while a row
    has no finished run (dp: Blend is an error)."""
    table = tables.table_for(table1_run())
    badnets = (der(BADNETS, {"acc": 0.84, "asr": 0.10}) + der(BADNETS, {"acc": 0.82, "asr": 0.12})) / 2
    blend = (der(BLEND, {"acc": 0.79, "asr": 0.05}) + der(BLEND, {"acc": 0.79, "asr": 0.03})) / 2
    assert table.rows[-1][:5] == ["mean DER", "–", f"{100 * (badnets + blend) / 2:.1f}", "95.1", "–"]
    assert len(table.rows[-1]) == len(table.headers)
    assert all(row[0] != "mean DER" for row in tables.table_for(variants_run()).rows)  # rows are settings, not attacks


def presets_run() -> dict:
    """I-BAU's presets as variants on two attacks: the default everywhere, the reference on BadNets only."""
    variants = {v: {"ibau": {"preset": v}} for v in ("default", "reference")}
    cells = [cell("ibau", rec(BADNETS, {"acc": 0.84, "asr": 0.02}), 0, variant="default"),
             cell("ibau", rec(BADNETS, {"acc": 0.80, "asr": 0.04}), 1, variant="default"),
             cell("ibau", rec(BLEND, {"acc": 0.80, "asr": 0.01}), 0, "Blend", variant="default"),
             cell("ibau", rec(BADNETS, {"acc": 0.85, "asr": 0.90}), 0, variant="reference"),
             cell("ibau", None, 0, "Blend", variant="reference")]
    return run(cells, ["ibau"], variants=variants, seeds=2, name="ibau_presets")


def test_one_defenses_variants_over_attacks_are_columns_with_their_mean_der():
    r = presets_run()
    assert agg.variants_as_columns(r) and not agg.variants_as_columns(variants_run())
    table = tables.table_for(r)
    assert table.headers == ["attack label", "no defense", "default", "reference"]
    default = ((der(BADNETS, {"acc": 0.84, "asr": 0.02}) + der(BADNETS, {"acc": 0.80, "asr": 0.04})) / 2
               + der(BLEND, {"acc": 0.80, "asr": 0.01})) / 2
    assert table.rows == [["BadNets", "85.00±0.00 / 99.00±0.00", "82.00±2.83 / 3.00±1.41", "85.00 / 90.00 ✗"],
                          ["Blend", "80.00 / 100.00", "80.00 / 1.00", "pending"],
                          ["mean DER", "–", f"{100 * default:.1f}", "–"]]


# --- CSV ---------------------------------------------------------------------------------------------
def test_long_csv_has_one_row_per_cell(tmp_path):
    path = tables.write_csv(table1_run(), tmp_path / "t.csv")
    with path.open() as f:
        rows = list(csv.DictReader(f))
    assert len(rows) == 12 and list(rows[0]) == tables.CSV_FIELDS
    assert rows[0]["after_acc"] == "0.84" and rows[0]["failed"] == "False" and float(rows[0]["der"]) == pytest.approx(0.94)
    assert rows[5]["status"] == "pending" and rows[5]["after_acc"] == "" and rows[10]["status"] == "error"


# --- the page ----------------------------------------------------------------------------------------
def _folder(tmp_path: Path, runs: list[dict]) -> Path:
    out = tmp_path / "bench"
    for r in runs:
        cells = []
        for c in r["cells"]:
            job = f"{r['suite']['name']}-{c['job']}"  # jobs of different suites are different jobs here
            if c["record"] is not None:
                records.write_record(out / "records" / f"{job}.json", {"id": job, **c["record"]})
            cells.append({**{k: v for k, v in c.items() if k != "record"}, "job": job})
        records.write_record(out / "suites" / f"{r['suite']['name']}.json", {**r, "cells": cells})
    return out


def test_the_page_from_a_folder_of_records(tmp_path):
    clean = [cell("ibau", rec({"acc": 0.9}, {"acc": 0.88, "ra": 0.0}), s, "clean") for s in range(2)]
    stab = stability_run()
    stab["cells"] += clean  # a clean model among seeded cells: ACC curves only, no ASR
    out = _folder(tmp_path, [table1_run(), stab, variants_run()])
    written = build_report(out)
    pictures = {"one_trigger_curves.png", "one_trigger_stability.png", "stability_curves.png", "stability_stability.png",
                "norm_bound_curves.png", "norm_bound_stability.png", "norm_bound_variants.png"}
    assert {n for n in written if n.endswith(".png")} == pictures  # seeds > 1: stability; variants: variants
    for name in pictures | {"one_trigger.md", "one_trigger.csv", "report.html"}:
        assert written[name].stat().st_size > 0, name
    md = (out / "report" / "one_trigger.md").read_text()
    assert "| BadNets | 85.00±0.00 / 99.00±0.00 | 83.00±1.41 / 11.00±1.41 |" in md
    assert "9 of 12 cells finished, 2 errors; preset cpu (npz, small_vgg, 12 epochs, clean set 5000); ibau 9.9" in md
    assert "| clean | 90.00±0.00 | 88.00±0.00 |" in (out / "report" / "stability.md").read_text()
    page = (out / "report" / "report.html").read_text()
    assert page.count("<table>") == 4 and page.count("<img src='data:image/png;base64,") == 7  # 3 suites, the claims
    assert "The paper&#x27;s claims" in page and "not run yet" in written["claims.md"].read_text()
    assert [r["suite"]["name"] for r in agg.load_run(out)] == ["norm_bound", "one_trigger", "stability"]


def test_json_writing_modules_do_not_import_matplotlib():
    modules = ["ibau.records", "ibau.bench", "ibau.bench.grid", "ibau.bench.aggregate", "ibau.bench.tables",
               "ibau.bench.plots", "ibau.bench.report", "ibau.pipeline.artifacts", "ibau.cli"]
    code = (f"import importlib, sys\nfor m in {modules!r}: importlib.import_module(m)\n"
            "print(sorted(m for m in sys.modules if m.split('.')[0] == 'matplotlib'))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


# --- the paper's numbers -----------------------------------------------------------------------------
def _benchmark(name: str):
    spec = importlib.util.spec_from_file_location(name, ROOT / "benchmarks" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_the_papers_numbers_are_written_in_one_place():
    sources = [p for d in ("src", "benchmarks") for p in (ROOT / d).rglob("*.py") if p.name != "paper.py"]
    for number in ("98.28", "83.35", "99.78", "1123.3", "394.4", "77.44", "86.58", "82.21", "92.86"):
        assert not [p.name for p in sources if number in p.read_text()], number
    cifar = _benchmark("cifar_results")
    assert cifar.paper("trojan_wm") == (paper.TABLE1["Trojan WM"]["none"], paper.TABLE1["Trojan WM"]["ibau"])
    assert cifar.paper("all_to_all_p4") == ((86.38, 85.02), (80.34, 10.46))  # every all-to-all variant: one row
    assert {s.paper for s in SUITES.values() if s.paper} <= set(paper.PAPER)  # a suite names a table of paper.py


def test_a_record_that_ran_an_older_default_is_marked_in_its_cell():
    """A record is reused for the settings its job id holds; where it ran a default that has changed since
    (I-BAU's class search in every round until found), its cell says so instead of passing for today's."""
    import dataclasses

    from ibau import IBAUConfig
    from ibau.bench.grid import config_drift

    spec = {"train": "train-x", "method": "ibau", "clean_size": 5000, "seed": 0, "options": {"rounds": 3},
            "ibau_preset": "default"}
    today = json.loads(json.dumps(dataclasses.asdict(IBAUConfig(rounds=3)), default=str))
    older = {**today, "patch_search": "classes_until_found"}
    older.pop("patch_screen")  # a setting added later: its default is the behaviour before it
    now = rec(BADNETS, {"acc": 0.84, "asr": 0.02}, spec=spec, config=today)
    stale = rec(BADNETS, {"acc": 0.84, "asr": 0.04}, spec=spec, config=older, rounds=[{"patch_pixels": None}])
    same = rec(BADNETS, {"acc": 0.84, "asr": 0.04}, spec=spec, config=older, rounds=[{"patch_pixels": 9}])
    assert config_drift(now) == {} and config_drift(same) == {}  # round 1 found a stamp: the same run either way
    assert config_drift(stale) == {"patch_search": ("classes_until_found", "classes_first_round")}
    assert config_drift({**now, "config": {**today, "outer_lr": 1e-3}}) == {"outer_lr": (1e-3, 2e-3)}
    table = tables.table_for(run([cell("ibau", now, 0), cell("ibau", stale, 1)], ["ibau"], seeds=2))
    assert table.rows[0][2] == "84.00±0.00 / 3.00±1.41 †"
    assert any(n.startswith("†: a seed's record ran patch_search=classes_until_found") for n in table.notes)
    clean = tables.table_for(run([cell("ibau", now, 0), cell("ibau", same, 1)], ["ibau"], seeds=2))
    assert "†" not in clean.rows[0][2] and not any(n.startswith("†") for n in clean.notes)
