"""`ibau bench` / `ibau report`: the grid's expansion, stable ids, resumption after a kill, the smoke run."""
from __future__ import annotations

import dataclasses
import importlib
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from conftest import NO_SIZE_RULES, SMALL_CLEAN_RULES
from ibau.bench import PRESETS, SUITES, Suite, build_report, expand, load_suite, run_bench, run_plan
from ibau.bench.grid import plan_status, record_path, resume_dir
from ibau.cli import main
from ibau.defenses import DEFENSES
from ibau.records import write_record


def test_builtin_suites_expand_with_shared_models():
    smoke = PRESETS["smoke"]
    plans = {name: expand(s, smoke) for name, s in SUITES.items()}
    one = plans["one_trigger"]
    # I-BAU three seeds, every other defense one (issue 17)
    assert len(one.trains) == 8 and len(one.cells) == 8 * (len(DEFENSES) + 2) and one.reference is not None
    assert {c.method for c in one.cells} == set(DEFENSES)
    # BadNets at 20% is one model for every suite that uses it: trained once, shared by all defenses.
    badnets = {t.id for p in plans.values() for t in p.trains
               if t.attack == "badnets" and not t.all_to_all and t.poison_ratio == 0.2}
    assert len(badnets) == 1
    assert [c.clean_size for c in plans["clean_size"].cells if c.method == "ibau" and c.seed == 0] == [200, 100, 20, 4]
    # fine-pruning prunes on a fifth of every clean set (the paper's 1,000 of 5,000): the smallest keeps some to tune
    assert {dict(c.job.options)["prune_size"] for c in plans["clean_size"].cells if c.method == "fine_pruning"} == {0.2}
    assert sorted({t.poison_ratio for t in plans["poison_ratio"].trains}) == [0.005, 0.05, 0.2]
    assert {c.seed for c in plans["stability"].cells} == {0, 1, 2, 3, 4}
    bounds = {c.variant: dict(c.job.options) for c in plans["norm_bound"].cells}
    assert bounds["Cδ=0.5"]["norm_bound"] == 0.5 and bounds["Cδ=none"]["norm"] == "none"
    non_add = plans["non_additive"]
    sr = [c.job for c in non_add.cells if c.attack_label == "SR" and c.method == "ibau"][0]
    assert dict(sr.options)["norm"] == "none" and dict(sr.options)["clamp"] is True  # per-attack I-BAU setting
    assert dict(sr.options)["inner_optimizer"] == "adam" and dict(sr.options)["inner_lr"] == 0.1
    ht = [t for t in non_add.trains if t.attack == "ht"][0]
    assert dict(ht.options)["poisons"] == 30 and non_add.reference is not None  # smoke-sized, crafted on a clean model
    ht_ibau = [c.job for c in non_add.cells if c.attack_label == "HT" and c.method == "ibau"][0]
    assert dict(ht_ibau.options)["rounds"] == 20  # the appendix ran I-BAU for 20 rounds against HT
    # Table 3 with the rounds a row needs: the same seven-trigger model as multi_trigger, I-BAU for 10 rounds
    more, three = plans["multi_trigger_rounds"], plans["multi_trigger"]
    assert {t.id for t in more.trains} == {t.id for t in three.trains if t.attack == "multi7"}
    assert [dict(c.job.options)["rounds"] for c in more.cells] == [10, 10, 10]
    # Tables 1/2 with the rounds a row needs: one_trigger's models and rows, I-BAU alone for 10 rounds
    more, three = plans["one_trigger_rounds"], plans["one_trigger"]
    assert {t.id for t in more.trains} == {t.id for t in three.trains}
    assert [c.attack_label for c in more.cells if c.seed == 0] == [c.attack_label for c in three.cells
                                                                   if c.method == "ibau" and c.seed == 0]
    assert {dict(c.job.options)["rounds"] for c in more.cells} == {10} and len(more.cells) == 8 * 3
    assert not {c.job.id for c in more.cells} & {c.job.id for c in three.cells}


def test_a_variant_can_name_ibaus_preset_and_its_default_shares_one_triggers_jobs():
    cpu = PRESETS["cpu"]
    presets = expand(SUITES["ibau_presets"], cpu)
    one = {c.job.id for c in expand(SUITES["one_trigger"], cpu).cells if c.method == "ibau" and c.seed == 0}
    by_variant = {v: [c.job for c in presets.cells if c.variant == v] for v in ("default", "reference", "paper")}
    assert {j.id for j in by_variant["default"]} == one  # one_trigger's seed-0 jobs: one folder runs them once
    for name in ("reference", "paper"):
        jobs = by_variant[name]
        assert len(jobs) == 8 and {j.ibau_preset for j in jobs} == {name} and not set(j.id for j in jobs) & one
        assert all("preset" not in dict(j.options) for j in jobs)  # a preset name, not an option of the config
    with pytest.raises(ValueError, match="preset 'authors'.*reference"):
        Suite("s", "s", [{"attack": "badnets"}], ["ibau"], variants={"a": {"ibau": {"preset": "authors"}}})
    with pytest.raises(ValueError, match="unknown defense 'ibua'"):
        Suite("s", "s", [{"attack": "badnets"}], ["ibau"], variants={"a": {"ibua": {"rounds": 1}}})


def test_job_ids_are_stable_and_change_with_the_recipe():
    suite, smoke = SUITES["efficiency"], PRESETS["smoke"]
    a, b = expand(suite, smoke), expand(suite, smoke)
    assert [c.job.id for c in a.cells] == [c.job.id for c in b.cells]
    longer = expand(suite, dataclasses.replace(smoke, epochs=smoke.epochs + 1))
    assert a.trains[0].id != longer.trains[0].id and a.trains[0].id.startswith("train-badnets-r0.2-s0-")
    other = expand(suite, dataclasses.replace(smoke, defense_options={"ibau": {"rounds": 9}}))
    ibau = [c.job.id for p in (a, other) for c in p.cells if c.method == "ibau"]
    assert ibau[0] != ibau[1]
    # Table 6 compares seconds within one run: its jobs never reuse another suite's record of the same defense
    one = {(c.method, c.job.train.id): c.job for c in expand(SUITES["one_trigger"], smoke).cells if c.seed == 0}
    for c in a.cells:
        twin = one[(c.method, c.job.train.id)]
        assert c.job.timed and not twin.timed and c.job.id != twin.id and "-timed-" in c.job.id
        assert dataclasses.replace(c.job, timed=False).id == twin.id and "timed" not in twin.spec


def test_a_changed_default_changes_the_ids_of_the_jobs_that_run_it(monkeypatch):
    """Job ids hold no defaults while they stand (every preset of every defense is listed as the records ran
    it), so no committed record changes id; a changed default enters the spec of the jobs that run it, so the
    grid does not reuse a record made with the old one, and a job whose options set that setting keeps its id.
    The defaults changed on purpose since the records began are listed here, each with its reason."""
    import json

    from ibau.bench import grid
    from ibau.defenses import DEFENSES, defense_class
    recorded = json.loads(grid.RECORDED_DEFAULTS.read_text())
    changed = {
        # ANP's threshold chosen on the clean set (BackdoorBench's sweep without its look at triggered test images)
        ("anp", "default"): {"prune_by": "search"},
        # FT-SAM as BackdoorBench runs it (a cosine of 100 batches, restarted), one dropout mask per SAM step
        ("ft_sam", "default"): {"lr_schedule": "cycle", "same_dropout": True},
        # I-BAU below 400 clean images (stop 50): a step shrunk as √(n/400) and an anchor faded out at 400; from 400
        # images on the same run, so only the jobs with fewer change id (the next test)
        ("ibau", "default"): SMALL_CLEAN_RULES, ("ibau", "fast"): SMALL_CLEAN_RULES,
    }
    for method in DEFENSES:
        for preset in defense_class(method).preset_names():
            assert grid.changed_defaults(method, preset) == changed.get((method, preset), {}), (method, preset)
            assert preset in recorded[method], (method, preset)
    plan = expand(SUITES["efficiency"], PRESETS["cpu"])  # 5,000 clean images: the small-set rules are inert
    ibau = next(c.job for c in plan.cells if c.method == "ibau")
    nad = next(c.job for c in plan.cells if c.method == "nad")
    before = (ibau.id, nad.id)
    assert "defaults" not in ibau.spec
    # as if the records had run the class search screened and today's default were the full search
    edited = json.loads(json.dumps(recorded))
    edited["ibau"]["default"]["patch_screen"] = 5
    monkeypatch.setattr(grid, "_recorded_defaults", lambda: edited)
    assert grid.changed_defaults("ibau", "default", clean_size=5000) == {"patch_screen": 0}
    assert ibau.spec["defaults"] == {"patch_screen": 0} and ibau.id != before[0] and nad.id == before[1]
    assert dataclasses.replace(ibau, options=(("patch_screen", 5),)).spec.get("defaults") is None
    # a setting the file does not list counts as changed: a new option is a decision, not a silent reuse
    del edited["ibau"]["default"]["patch_l1"]
    assert grid.changed_defaults("ibau", "default", clean_size=5000) == {"patch_screen": 0, "patch_l1": 0.003}


def test_a_default_for_small_clean_sets_changes_only_the_ids_of_the_jobs_it_changes(monkeypatch):
    """A changed default that acts only through the clean set's size (``IBAUConfig.SIZE_FIELDS``) enters the spec
    of the jobs whose size it changes and leaves the others' ids (and their records' drift) as they were: the
    default's rules below 400 clean images (stop 50) rerun Table 5's 100-image row and nothing else of it."""
    import json

    from ibau.bench import grid
    from ibau.unlearn import IBAUConfig
    rule, none = SMALL_CLEAN_RULES, NO_SIZE_RULES
    assert {k: grid._recorded_defaults()["ibau"]["default"][k] for k in rule} == none  # what the records ran
    assert IBAUConfig(**none).size_rules(5000) == IBAUConfig().size_rules(5000) == IBAUConfig(**none).size_rules(400)
    assert IBAUConfig().size_rules(100) == {"step_size": pytest.approx(1e-3), "distill_weight": 1.0, "augment": "none"}
    assert IBAUConfig(**none).size_rules(100) == {"step_size": 2e-3, "distill_weight": 0.0, "augment": "none"}
    plan = expand(SUITES["clean_size"], PRESETS["cpu"])
    jobs = {c.job.clean_size: c.job for c in plan.cells if c.method == "ibau" and c.seed == 0}
    assert grid.changed_defaults("ibau", "default", clean_size=5000) == {}
    assert grid.changed_defaults("ibau", "default", clean_size=400) == {}
    assert grid.changed_defaults("ibau", "default", clean_size=100) == rule
    assert grid.changed_defaults("ibau", "default") == grid.changed_defaults("ibau", "default", clean_size=100)
    assert {n: "defaults" in job.spec for n, job in jobs.items()} == {5000: False, 2500: False, 500: False, 100: True}
    # as if the records had run with the rule: then the 100-image job is the one whose id goes back
    before = {n: job.id for n, job in jobs.items()}
    edited = json.loads(json.dumps(grid._recorded_defaults()))
    edited["ibau"]["default"].update(rule)
    monkeypatch.setattr(grid, "_recorded_defaults", lambda: edited)
    assert grid.changed_defaults("ibau", "default", clean_size=100) == {}
    assert {n: job.id == before[n] for n, job in jobs.items()} == {5000: True, 2500: True, 500: True, 100: False}
    monkeypatch.undo()
    ran = {**IBAUConfig().to_dict(), **none}
    def record(n):
        return {"spec": {"method": "ibau", "ibau_preset": "default", "options": {}, "clean_size": n}, "config": ran}
    assert grid.config_drift(record(5000)) == grid.config_drift(record(400)) == {}
    assert grid.config_drift(record(100))["clean_distill"] == (0.0, 1.0)
    # a record from before the cap and the fade existed lacks them: they ran as the file lists them (off), not as now
    ran = {k: v for k, v in ran.items() if k not in ("outer_lr_size_cap", "clean_distill_until")}
    assert grid.config_drift(record(5000)) == {}
    assert grid.config_drift(record(100))["clean_distill_until"] == (None, 400)
    # a guard's slice does not unlearn: the rule is judged at the size that does
    guarded, plain = IBAUConfig(acc_guard=0.02), IBAUConfig(acc_guard=0.02, **none)
    assert guarded.size_rules(450) == plain.size_rules(450)  # 405 images unlearn
    assert guarded.size_rules(440) != plain.size_rules(440)  # 396 do
    assert IBAUConfig(**none).size_rules(440) == IBAUConfig().size_rules(440)


def _seeds(plan) -> dict[str, set[int]]:
    out: dict[str, set[int]] = {}
    for c in plan.cells:
        out.setdefault(c.method, set()).add(c.seed)
    return out


def test_seeds_per_method_follow_the_issue_and_keep_seed_0_job_ids():
    cpu = PRESETS["cpu"]
    plans = {name: expand(s, cpu) for name, s in SUITES.items()}
    for name in ("one_trigger", "multi_trigger", "poison_ratio"):  # Tables 2-4: I-BAU 3, baselines 1
        seeds = _seeds(plans[name])
        assert seeds.pop("ibau") == {0, 1, 2} and all(s == {0} for s in seeds.values()), name
    assert set(map(frozenset, _seeds(plans["clean_size"]).values())) == {frozenset({0, 1, 2})}  # Table 5: all 3
    assert _seeds(plans["efficiency"]) == {m: {0} for m in SUITES["efficiency"].defenses}  # Table 6: 1
    assert _seeds(plans["stability"]) == {"ibau": set(range(5)), "uap_at": set(range(5))}  # Fig. 1: 5 each
    assert _seeds(plans["norm_bound"]) == {"ibau": {0, 1, 2}}  # Fig. 2: 3
    # seed 0's jobs are those of a single-seed suite, so finished records are found on resume; this id is the
    # one docs/results/one_trigger.csv recorded before seeds per method existed
    single = expand(dataclasses.replace(SUITES["one_trigger"], method_seeds={}), cpu)
    assert {c.job.id for c in single.cells} == {c.job.id for c in plans["one_trigger"].cells if c.seed == 0}
    badnets = [c.job.id for c in single.cells if c.attack_label == "BadNets" and c.method == "ibau"]
    assert badnets == ["defend-ibau-badnets-r0.2-s0-b4417bd7-c5000-s0-35d385c7"]
    assert SUITES["one_trigger"].max_seeds == 3 and SUITES["one_trigger"].seeds_for("nad") == 1


def test_method_seeds_are_checked_and_read_from_suite_files(tmp_path):
    path = tmp_path / "mine.json"
    path.write_text(json.dumps({"name": "mine", "title": "mine", "attacks": [{"attack": "badnets"}],
                                "defenses": ["ibau", "nad"], "method_seeds": {"ibau": 2}}))
    suite = load_suite(str(path))
    assert suite.method_seeds == {"ibau": 2} and _seeds(expand(suite, PRESETS["smoke"])) == {"ibau": {0, 1}, "nad": {0}}
    with pytest.raises(ValueError, match="method_seeds names dp, not among its defenses"):
        Suite("x", "x", [{"attack": "badnets"}], ["ibau"], method_seeds={"dp": 3})
    with pytest.raises(ValueError, match="whole numbers >= 1"):
        Suite("x", "x", [{"attack": "badnets"}], ["ibau"], method_seeds={"ibau": 0})
    with pytest.raises(ValueError, match="must map defense names"):
        Suite("x", "x", [{"attack": "badnets"}], ["ibau"], method_seeds=[3])  # type: ignore[arg-type]
    only = SUITES["one_trigger"].only(["nad", "dp"])  # --defenses drops I-BAU, and its seed count with it
    assert only.defenses == ["nad", "dp"] and only.method_seeds == {}


def test_columns_run_one_at_a_time_add_up_to_the_whole_suite(tmp_path):
    """`ibau bench --defenses nad` after `--defenses ibau,fine_pruning` into one folder: the manifest (and so the
    report) has all three columns, in the suite's order, with every cell once; another preset replaces it."""
    from ibau.bench.grid import bench_plan, manifest, merge_manifests, save_manifest

    for subset in (["ibau", "fine_pruning"], ["nad"], ["fine_pruning"]):
        data = json.loads(save_manifest(tmp_path, bench_plan("poison_ratio", "smoke", subset)).read_text())
    whole = json.loads(json.dumps(manifest(bench_plan("poison_ratio", "smoke", ["ibau", "fine_pruning", "nad"]))))
    assert data["suite"]["defenses"] == ["ibau", "fine_pruning", "nad"] == whole["suite"]["defenses"]
    assert data["suite"]["method_seeds"] == {"ibau": 3}
    assert sorted(c["job"] for c in data["cells"]) == sorted(c["job"] for c in whole["cells"])
    assert len({c["job"] for c in data["cells"]}) == len(data["cells"])
    data = json.loads(save_manifest(tmp_path, bench_plan("poison_ratio", "cpu", ["nad"])).read_text())
    assert data["suite"]["defenses"] == ["nad"] and data["preset"]["name"] == "cpu"
    # a job whose id changed (a new field of its spec) takes its cell's place instead of adding a second cell
    renamed = json.loads(json.dumps(manifest(bench_plan("poison_ratio", "cpu", ["nad"]))))
    for c in renamed["cells"]:
        c["job"] += "-new"
    data = json.loads(save_manifest(tmp_path, bench_plan("poison_ratio", "cpu", ["ibau"])).read_text())
    assert len(merge_manifests(data, renamed)["cells"]) == len(data["cells"])
    assert {c["job"] for c in merge_manifests(data, renamed)["cells"] if c["method"] == "nad"} == {
        c["job"] for c in renamed["cells"]}


def test_a_defenses_new_options_at_a_preset_drop_its_own_column_only(tmp_path):
    """A preset that gains or changes one defense's options (`defense_options`) keeps every other column of
    the folder's earlier runs; the column whose options changed keeps only the cells run with the new ones."""
    from ibau.bench.grid import bench_plan, manifest, merge_manifests

    old = json.loads(json.dumps(manifest(bench_plan("poison_ratio", "smoke", ["ibau", "fine_pruning", "nad"]))))
    new = json.loads(json.dumps(manifest(bench_plan("poison_ratio", "smoke", ["ibau"]))))
    new["preset"]["defense_options"] = {**new["preset"]["defense_options"], "nad": {"epochs": 99}}
    merged = merge_manifests(old, new)
    assert merged["suite"]["defenses"] == ["ibau", "fine_pruning"]
    assert {c["method"] for c in merged["cells"]} == {"ibau", "fine_pruning"}
    assert [c for c in merged["cells"] if c["method"] == "fine_pruning"] == [
        c for c in old["cells"] if c["method"] == "fine_pruning"]
    # a change outside the defenses' options is another preset: the new run replaces the old one
    new["preset"]["epochs"] = 1 + old["preset"]["epochs"]
    assert merge_manifests(old, new) == new


def test_rows_run_apart_add_up_to_the_whole_suite(tmp_path):
    """`ibau bench --attacks BadNets --defenses nad` beside a run of every row's I-BAU: both rows sets are in
    the manifest, in the suite's order; the reference model of the optimised triggers stays named."""
    from ibau.bench.grid import bench_plan, save_manifest

    full = bench_plan("one_trigger", "smoke", ["ibau"])
    save_manifest(tmp_path, bench_plan("one_trigger", "smoke", ["nad"], ["BadNets"]))
    assert bench_plan("one_trigger", "smoke", ["nad"], ["BadNets"]).reference is None
    data = json.loads(save_manifest(tmp_path, full).read_text())
    assert [Suite.label(a) for a in data["suite"]["attacks"]] == [Suite.label(a) for a in SUITES["one_trigger"].attacks]
    assert data["suite"]["defenses"] == ["ibau", "nad"] and data["reference"] == full.reference.id
    assert {(c["attack_label"], c["method"]) for c in data["cells"] if c["method"] == "nad"} == {("BadNets", "nad")}
    assert len(data["cells"]) == len(full.cells) + 1
    with pytest.raises(ValueError, match="has no row 'Badnets'; its rows are 'BadNets'"):
        bench_plan("one_trigger", "smoke", None, ["Badnets"])


def test_a_row_label_with_commas_can_be_named_in_a_comma_separated_list():
    """`--attacks "Trojan WM, model seed 1,BadNets"` is split on commas; the pieces of a label that holds commas are
    joined again, the longest label first, and an unknown piece is still an error naming the rows."""
    from ibau.bench.grid import bench_plan, rejoin_labels

    labels = ["Trojan WM, model seed 1", "Trojan WM", "BadNets"]
    assert rejoin_labels(["Trojan WM", " model seed 1", "BadNets"], labels) == ["Trojan WM, model seed 1", "BadNets"]
    assert rejoin_labels(["Trojan WM", "BadNets", ""], labels) == ["Trojan WM", "BadNets"]
    assert rejoin_labels(["model seed 1"], labels) == ["model seed 1"]
    suite = Suite(name="seeded", title="model seeds", defenses=["ibau"],
                  attacks=[{"attack": "badnets", "label": "BadNets, model seed 1", "model_seed": 1},
                           {"attack": "badnets", "label": "BadNets"}])
    plan = bench_plan(suite, "smoke", None, "BadNets, model seed 1".split(","))
    assert {c.attack_label for c in plan.cells} == {"BadNets, model seed 1"}
    with pytest.raises(ValueError, match="has no row 'seed 2'"):
        bench_plan(suite, "smoke", None, ["BadNets", "seed 2"])


def test_trigger_norm_is_the_change_to_a_zero_image():
    from ibau.attacks import BadNets
    from ibau.bench.grid import trigger_l2

    assert trigger_l2(BadNets(size=3, target=0), (3, 8, 8)) == pytest.approx(27 ** 0.5)  # 3×3×3 ones
    assert trigger_l2(None, (3, 8, 8)) is None


def test_suite_files_and_bad_suites(tmp_path):
    path = tmp_path / "mine.json"
    path.write_text(json.dumps({"name": "mine", "title": "mine", "attacks": [{"attack": "badnets"}],
                                "defenses": ["ibau", "finetune"], "poison_ratios": [0.2, 0.1]}))
    suite = load_suite(str(path))
    assert len(expand(suite, PRESETS["smoke"]).cells) == 4
    path.write_text(json.dumps({"name": "x", "title": "x", "attacks": [{"attack": "badnets"}], "defenses": ["ibau"],
                                "colour": "red"}))
    with pytest.raises(ValueError, match="unknown field.*colour"):
        load_suite(str(path))
    with pytest.raises(ValueError, match="unknown defense"):
        Suite("x", "x", [{"attack": "badnets"}], ["nope"])
    with pytest.raises(ValueError, match="unknown attack|attack"):
        Suite("x", "x", [{"attack": "nope"}], ["ibau"])
    with pytest.raises(ValueError, match="unknown suite"):
        load_suite("no_such_suite")
    with pytest.raises(ValueError, match="needs --data-dir"):
        run_bench("efficiency", "cpu", tmp_path / "out")
    with pytest.raises(ValueError, match="has no defense dp"):
        run_bench("efficiency", "smoke", tmp_path / "out", defenses=["ibau", "dp"])


def test_an_attack_entry_can_train_its_model_with_another_seed(tmp_path):
    """Rows whose models were trained apart (issue 19's confirmation on new models): each entry's model_seed
    seeds its own training, so the two models differ, and each row's defenses run on its own model."""
    suite = Suite("confirm", "confirm", [{"attack": "badnets", "label": "BadNets"},
                                         {"attack": "badnets", "label": "BadNets, model 1", "model_seed": 1}],
                  ["finetune"])
    plan = expand(suite, PRESETS["smoke"])
    first, second = plan.trains
    assert (first.seed, second.seed) == (0, 1) and first.id != second.id
    assert first == expand(Suite("x", "x", [{"attack": "badnets"}], ["finetune"]), PRESETS["smoke"]).trains[0]
    assert [(c.attack_label, c.job.train.seed) for c in plan.cells] == [("BadNets", 0), ("BadNets, model 1", 1)]
    run_plan(dataclasses.replace(plan, cells=[]), tmp_path, device="cpu")  # the two trainings only
    weights = [load_file(str(tmp_path / "models" / t.id / "model.safetensors")) for t in plan.trains]
    assert any(not torch.equal(weights[0][k], weights[1][k]) for k in weights[0])
    with pytest.raises(ValueError, match="model_seed must be a whole number"):
        Suite("x", "x", [{"attack": "badnets", "model_seed": -1}], ["ibau"])


def _cli(*args: str) -> None:
    with pytest.raises(SystemExit) as exc:
        main(list(args))
    assert exc.value.code == 0


def _records(out: Path) -> dict[str, float]:
    return {p.name: p.stat().st_mtime_ns for p in (out / "records").glob("*.json")}


@pytest.mark.slow
def test_a_killed_run_resumes_without_redoing_finished_jobs(tmp_path):
    suite = tmp_path / "small.json"
    suite.write_text(json.dumps({"name": "small", "title": "small", "attacks": [{"attack": "badnets"}],
                                 "defenses": ["finetune", "ibau", "fine_pruning", "nad"]}))
    out = tmp_path / "bench"
    cmd = [sys.executable, "-c", "from ibau.cli import main; main()", "bench", "--suite", str(suite),
           "--preset", "smoke", "--out", str(out), "--no-report"]
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 300
    try:  # kill it as soon as the model and at least one defense are recorded
        while len(_records(out) if (out / "records").exists() else {}) < 2:
            assert proc.poll() is None, "the bench finished or crashed before it could be killed"
            assert time.monotonic() < deadline
            time.sleep(0.05)
    finally:
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait()
    before = _records(out)
    assert 2 <= len(before) < 5  # killed mid-way: model + some but not all four defenses
    counts = run_bench(str(suite), "smoke", out, jobs=2)  # the rest in 2 processes
    after = _records(out)
    assert counts["done"] == len(before) and counts["ran"] == 5 - len(before) and counts["errors"] == 0
    assert all(after[name] == mtime for name, mtime in before.items())  # finished jobs were not redone
    assert len(after) == 5


def test_a_dry_run_lists_the_jobs_left_and_prices_them_from_the_folders_finished_jobs(tmp_path, capsys):
    suite = tmp_path / "small.json"
    suite.write_text(json.dumps({"name": "small", "title": "small", "attacks": [{"attack": "badnets"}],
                                 "defenses": ["finetune", "ibau"]}))
    out = tmp_path / "bench"
    plan = expand(load_suite(str(suite)), PRESETS["smoke"])
    train, (finetune, ibau) = plan.trains[0], plan.defends
    assert [(r.id, r.state, r.estimate) for r in plan_status(plan, out)] == [
        (train.id, "todo", None), (finetune.id, "todo", None), (ibau.id, "todo", None)]
    # the model and I-BAU recorded; I-BAU on another model of the folder with another clean-set size, and an
    # error: only finished jobs of the same kind (and size, where there is one) price a job
    write_record(record_path(out, train.id), {"kind": "train", "status": "ok", "seconds": 600.0})
    write_record(record_path(out, "defend-ibau-other-c200"), {"kind": "defend", "method": "ibau", "clean_size": 200,
                                                              "status": "ok", "seconds": 30.0})
    write_record(record_path(out, "defend-ibau-other-c900"), {"kind": "defend", "method": "ibau", "clean_size": 900,
                                                              "status": "ok", "seconds": 900.0})
    write_record(record_path(out, "defend-finetune-error"), {"kind": "defend", "method": "finetune",
                                                             "clean_size": 200, "status": "error", "seconds": 1.0})
    (resume_dir(out, ibau.id)).mkdir(parents=True)
    (resume_dir(out, ibau.id) / "part.json").write_text("{}")
    rows = plan_status(plan, out)
    assert [(r.state, r.estimate) for r in rows] == [("done", None), ("todo", None), ("started", 30.0)]
    _cli("bench", "--suite", str(suite), "--preset", "smoke", "--out", str(out), "--dry-run")
    printed = capsys.readouterr().out.splitlines()
    assert printed[-3:] == [f"todo     {finetune.id}  no estimate", f"started  {ibau.id}  ~0 min",
                            "1 done, 0 errors, 2 to run (1 started: they resume where they stopped): about 0.0 h at "
                            "the pace of this folder's finished jobs (median of each kind, under the load they ran "
                            "with); 1 of a kind with no finished job not counted"]
    assert sorted(p.name for p in (out / "records").iterdir()) == sorted(  # it ran nothing
        [f"{train.id}.json", "defend-ibau-other-c200.json", "defend-ibau-other-c900.json", "defend-finetune-error.json"])


def test_paper_rule_for_comparable_or_better():
    from ibau.bench.report import compare_with_best

    def cell(acc_before, acc, asr):
        return {"record": {"status": "ok", "num_classes": 10, "before": {"acc": acc_before, "asr": 0.99},
                           "after": {"acc": acc, "asr": asr}}}

    rows = {"ibau": [cell(0.85, 0.835, 0.12)], "nad": [cell(0.85, 0.84, 0.09)], "dp": [cell(0.85, 0.30, 0.0)]}
    # ACC 0.5 below, ASR 3 above NAD; dp loses 55 ACC points so it is not the best
    assert compare_with_best(rows).startswith("comparable or better (best: nad 84.00 / 9.00)")
    rows["nad"] = [cell(0.85, 0.84, 0.05)]  # ASR gap 7 points, and 12% is above chance (10%)
    assert compare_with_best(rows).startswith("**worse**")
    rows["ibau"] = [cell(0.85, 0.80, 0.08)]  # ACC 4 points lower but ASR at chance: comparable by the rule
    assert compare_with_best(rows).startswith("comparable or better")
    assert compare_with_best({"ibau": rows["ibau"], "dp": rows["dp"]}).startswith("better")
    assert compare_with_best({"ibau": rows["ibau"], "nad": [{"record": None}]}) == "pending"


def _defend_records(out: Path) -> dict[str, dict]:
    recs = (json.loads(p.read_text()) for p in (out / "records").glob("*.json"))
    return {r["id"]: r for r in recs if r["kind"] == "defend"}


@pytest.mark.slow
def test_interrupted_defense_is_not_recorded_and_a_clean_model_is_a_cell(tmp_path, monkeypatch):
    """Issue 16: Ctrl-C inside I-BAU stops the grid without an `ok` record (a re-run repeats the job, with
    an uninterrupted run's numbers), and a clean model's cell has ACC but no ASR, DER or verdict."""
    import shutil

    core = importlib.import_module("ibau.unlearn.core")  # `ibau.unlearn` is also the function

    suite = Suite("mixed", "mixed", [{"attack": "none"}, {"attack": "badnets"}], ["ibau"])
    out = tmp_path / "bench"
    real, calls = core.solve_delta, {"n": 0}

    def interrupting(*args, **kwargs):  # the second round of the first defense job gets Ctrl-C
        calls["n"] += 1
        if calls["n"] == 2:
            raise KeyboardInterrupt
        return real(*args, **kwargs)

    monkeypatch.setattr(core, "solve_delta", interrupting)
    with pytest.raises(KeyboardInterrupt):
        run_bench(suite, "smoke", out)
    assert calls["n"] == 2 and _defend_records(out) == {}  # stopped there: nothing recorded as finished
    monkeypatch.setattr(core, "solve_delta", real)

    counts = run_bench(suite, "smoke", out)
    assert counts["errors"] == 0 and counts["ran"] == 2  # both defense jobs now, the models were kept
    records = _defend_records(out)
    assert len(records) == 2 and all(r["status"] == "ok" for r in records.values())
    clean = next(r for r in records.values() if r["attack"] == "none")
    poisoned = next(r for r in records.values() if r["attack"] == "badnets")
    assert "asr" not in clean["after"] and clean["after"]["acc"] > 0.3
    assert clean["der"] is None and clean["failed"] is None
    assert 0 <= poisoned["der"] <= 1 and isinstance(poisoned["failed"], bool)
    build_report(out)  # the report takes the clean cell too

    again = tmp_path / "again"  # the same jobs, never interrupted, on the same models
    shutil.copytree(out, again)
    for job_id in records:
        record_path(again, job_id).unlink()
    run_bench(suite, "smoke", again)
    for job_id, rec in _defend_records(again).items():
        assert rec["after"] == records[job_id]["after"], job_id


def test_a_stopped_neural_cleanse_job_resumes_from_its_kept_classes(tmp_path, monkeypatch):
    """A grid job of Neural Cleanse stopped mid-search keeps its finished classes under resume/<job>; the
    re-run searches only the rest, records what an uninterrupted job records, and removes the folder."""
    import shutil

    from conftest import class_searches
    from ibau.bench.grid import resume_dir
    from ibau.defenses import neural_cleanse as nc

    suite = Suite("nc", "nc", [{"attack": "badnets"}], ["neural_cleanse"])
    out, real, calls = tmp_path / "bench", nc.reverse_engineer, []
    run_bench(suite, "smoke", out)  # the model, and a job whose record is then dropped to run it again
    job = expand(suite, PRESETS["smoke"]).defends[0]
    record_path(out, job.id).unlink()
    whole = tmp_path / "whole"
    shutil.copytree(out, whole)

    monkeypatch.setattr(nc, "reverse_engineer", class_searches(real, calls, stop_after=3))
    with pytest.raises(KeyboardInterrupt):
        run_bench(suite, "smoke", out)
    kept = resume_dir(out, job.id)
    assert calls == [0, 1, 2] and len(list(kept.glob("class_*.pt"))) == 3 and not record_path(out, job.id).exists()
    monkeypatch.setattr(nc, "reverse_engineer", class_searches(real, calls))
    assert run_bench(suite, "smoke", out)["ran"] == 1
    assert calls == list(range(10)) and not kept.exists()
    resumed = json.loads(record_path(out, job.id).read_text())
    assert resumed["status"] == "ok" and resumed["details"]["resumed_parts"] == 3
    run_bench(suite, "smoke", whole)
    uninterrupted = json.loads(record_path(whole, job.id).read_text())
    assert resumed["after"] == uninterrupted["after"] and resumed["flagged"] == uninterrupted["flagged"]


def test_the_grid_trains_with_the_one_recipe_ibau_attack_uses():
    from ibau.bench import PRESETS
    from ibau.training import RECIPES

    for name in ("cpu", "paper"):
        preset = PRESETS[name]
        assert {"epochs": preset.epochs, "train_limit": preset.train_limit} == RECIPES[name]


def test_backdoorbench_suite_expands_at_every_scale(tmp_path):
    """Issue 19 part 2: attacks × poison ratios × defenses (I-BAU with three seeds), the architecture from the
    preset; `ibau bench --suite backdoorbench --preset smoke` plans every cell (no job is run here)."""
    from ibau.bench.grid import manifest, save_manifest

    suite = SUITES["backdoorbench"]
    labels = ["BadNets", "Blended", "Smooth", "Input-aware", "WaNet"]
    assert [a["label"] for a in suite.attacks] == labels and suite.poison_ratios == [0.1, 0.05]
    assert {"ibau", "anp", "sau", "ft_sam"} <= set(suite.defenses)
    per_pair = len(suite.defenses) - 1 + 3  # I-BAU 3 seeds, every baseline 1
    for name, arch in (("smoke", "tiny_vgg"), ("cpu", "small_vgg"), ("cpu_gtsrb", "small_vgg"),
                       ("cpu_resnet20", "resnet20"), ("cpu_gtsrb_resnet20", "resnet20")):
        plan = expand(suite, PRESETS[name])
        assert len(plan.trains) == 10 and plan.reference is None and {t.arch for t in plan.trains} == {arch}, name
        assert len(plan.cells) == len(plan.defends) == 5 * 2 * per_pair, name
        assert {(c.attack_label, c.poison_ratio, c.method) for c in plan.cells} == {
            (a, r, m) for a in labels for r in (0.1, 0.05) for m in suite.defenses}
    assert PRESETS["cpu_resnet20"].dataset == "npz" and PRESETS["cpu_gtsrb_resnet20"].dataset == "gtsrb"
    for base in ("cpu", "cpu_gtsrb"):  # the same recipe and defense settings, only the architecture differs
        assert dataclasses.replace(PRESETS[f"{base}_resnet20"], name=base, arch="small_vgg") == PRESETS[base]
    plan = expand(suite, PRESETS["smoke"])
    trains = {t.attack: t for t in plan.trains if t.poison_ratio == 0.1}
    assert dict(trains["blend"].options) == {"pattern": "test_image", "alpha": 0.2, "target": 0}
    assert all(dict(trains[a].options)["target"] == 0 for a in ("badnets", "smooth"))
    from ibau.attacks import ATTACKS
    assert all(ATTACKS[a]().target == 0 for a in ("wanet", "iab"))  # their default target is BackdoorBench's 0
    data = json.loads(save_manifest(tmp_path, plan).read_text())
    assert data == json.loads(json.dumps(manifest(plan))) and len(data["cells"]) == 100
    assert data["suite"]["name"] == "backdoorbench" and data["preset"]["arch"] == "tiny_vgg"
