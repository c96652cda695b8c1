"""The whole one_trigger suite at the smoke preset on digits, through the CLI: every cell, the report and its
rebuild from the records alone (one module fixture: the grid runs once)."""
from __future__ import annotations

import csv
import json

import pytest

from ibau.bench import PRESETS, SUITES, build_report, expand
from ibau.bench.grid import record_path
from ibau.defenses import DEFENSES
from test_bench import _cli


@pytest.fixture(scope="module")
def smoke_one_trigger(tmp_path_factory):
    out = tmp_path_factory.mktemp("bench")
    _cli("bench", "--suite", "one_trigger", "--preset", "smoke", "--out", str(out), "--device", "cpu")
    return out


@pytest.mark.slow
def test_smoke_one_trigger_report_has_every_cell(smoke_one_trigger):
    out = smoke_one_trigger
    report = out / "report"
    for name in ("one_trigger.md", "one_trigger.csv", "one_trigger_curves.png", "report.html"):
        assert (report / name).stat().st_size > 0, name
    plan = expand(SUITES["one_trigger"], PRESETS["smoke"])
    records = [json.loads(record_path(out, c.job.id).read_text()) for c in plan.cells]
    errors = {r["id"]: r["error"] for r in records if r["status"] != "ok"}
    assert not errors
    assert all(0 < r["load"]["cpu_seconds"] <= r["seconds"] * (r["load"]["cpus"] + 1) for r in records)
    # I-BAU's records keep each round's diagnostics beside its evaluation: where the stamp came from and
    # what the δ search cost, so a slow round (a class search) can be told from a loaded machine
    ibau_runs = [r for r in records if r["method"] == "ibau" and r["before"].get("asr") is not None]
    for r in ibau_runs:
        assert [row["round"] for row in r["rounds"]] == list(range(1, r["config"]["rounds"] + 1))
        for row in r["rounds"]:
            assert {"acc", "asr", "patch_pixels", "patch_class", "patch_fooling_after", "inner_seconds", "fooling"} <= set(row)
            assert (row["patch_fooling_after"] is None) == (row["patch_pixels"] is None)
            assert 0 < row["inner_seconds"] <= row["seconds"]
    assert any(row["patch_pixels"] for r in ibau_runs for row in r["rounds"])  # some round found a stamp
    md = (report / "one_trigger.md").read_text()
    lines = [line for line in md.splitlines() if line.startswith("| ")]
    header, rows = lines[0], lines[1:]
    assert all(m in header for m in DEFENSES) and "paper" not in header  # digits: no CIFAR numbers beside
    labels = [a["label"] for a in SUITES["one_trigger"].attacks]
    assert [r.split(" | ")[0].strip("| ") for r in rows] == labels + ["mean DER"]
    der_cells = [c.strip() for c in rows.pop().strip("|").split("|")]  # every row ran: a mean DER per defense
    assert len(der_cells) == 2 + len(DEFENSES) + 1 and all(0 <= float(c) <= 100 for c in der_cells[2:-1])
    for row in rows:  # label, no defense, one "ACC / ASR" cell per defense, the paper's verdict for I-BAU
        cells = [c.strip() for c in row.strip("|").split("|")]
        assert len(cells) == 2 + len(DEFENSES) + 1
        assert all(" / " in c and "pending" not in c and "error" not in c for c in cells[1:-1]), row
        assert cells[-1].startswith(("comparable or better", "**worse**", "better")), row
    with (report / "one_trigger.csv").open() as f:
        table = list(csv.DictReader(f))
    assert len(table) == len(plan.cells) and all(r["status"] == "ok" for r in table)
    after = {(r["attack_label"], r["method"]): float(r["after_asr"]) for r in table}
    before = {r["attack_label"]: float(r["before_asr"]) for r in table}
    assert before["BadNets"] > 0.5 and after[("BadNets", "ibau")] < before["BadNets"]
    html = (report / "report.html").read_text()
    assert html.count("<img src='data:image/png;base64,") >= 2 and "<table>" in html


def test_report_is_rebuilt_from_records_alone(smoke_one_trigger, tmp_path):
    dest = tmp_path / "again"
    _cli("report", str(smoke_one_trigger), "--dest", str(dest))
    assert (dest / "one_trigger.md").read_text() == (smoke_one_trigger / "report" / "one_trigger.md").read_text()
    with pytest.raises(ValueError, match="no bench run"):
        build_report(tmp_path / "empty")
