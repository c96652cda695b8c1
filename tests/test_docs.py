"""The docs stay true: every command and option of `ibau` is in the README, and docs/results.md shows the
tables its benchmark scripts generate from the committed records."""
import json
from pathlib import Path

import typer

from conftest import NO_SIZE_RULES, SMALL_CLEAN_RULES
from ibau.cli import app

README = (Path(__file__).resolve().parents[1] / "README.md").read_text()


def test_every_command_and_option_is_in_the_readme():
    group = typer.main.get_command(app)
    checked = 0
    assert "--debug" in README
    for name, cmd in group.commands.items():
        assert f"ibau {name}" in README, name
        for param in cmd.params:
            if type(param).__name__.endswith("Option"):  # typer vendors click in recent releases
                assert any(opt in README for opt in param.opts), (name, param.opts)
            checked += 1
    assert checked >= 7


def _benchmark(name: str):
    import importlib.util
    path = Path(__file__).resolve().parents[1] / "benchmarks" / f"{name}.py"
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _presets_block(name: str, text: str) -> bool:
    """Whether docs/presets.md holds ``text`` as its generated block ``name`` (between its table markers)."""
    presets = (Path(__file__).resolve().parents[1] / "docs" / "presets.md").read_text()
    return f"<!-- table:{name} -->\n{text}\n<!-- /table -->" in presets


def test_issue3_tables_in_results_are_generated_from_the_records():
    """docs/results.md shows the tables its scripts make from the committed records, not hand edits."""
    results = (Path(__file__).resolve().parents[1] / "docs" / "results.md").read_text()
    cifar = _benchmark("cifar_results")
    assert cifar.table() in results
    sweep = _benchmark("a2a_sweep_table")
    text = sweep.table(json.loads(sweep.SUMMARY.read_text())["runs"])
    assert text.count("\n") > 10 and text in results


def test_issue15_tables_in_presets_are_generated_from_the_records():
    """docs/presets.md's measurements are the tables benchmarks/presets_table.py makes from the records."""
    presets = (Path(__file__).resolve().parents[1] / "docs" / "presets.md").read_text()
    tables = _benchmark("presets_table").doc_tables()
    assert set(tables) == {"authors", "authors_search", "candidate_cifar", "candidate_digits", "digits", "cifar",
                           "classes_authors", "classes_cifar", "classes_digits", "classes_digits_ms", "new_default"}
    for key, text in tables.items():
        assert text.count("\n") >= 3, key  # a header, a rule and at least two rows
        assert text in presets, f"docs/presets.md's {key} table differs from `presets_table.py --doc`"


def test_the_delta_probe_table_in_presets_is_generated_from_its_records():
    """docs/presets.md's "Where each δ points" table is `inner_search.py --table` of its record folder."""
    root = Path(__file__).resolve().parents[1]
    text = _benchmark("inner_search").table(root / "docs" / "measurements" / "issue19" / "probe")
    assert text.count("\n") >= 12  # a header, a rule and the 13 records' rows
    assert _presets_block("probe", text)


def test_the_round_probe_table_in_presets_is_generated_from_its_records():
    """docs/presets.md's "Choosing the round" table is `probe_table.py` of its two record folders."""
    root = Path(__file__).resolve().parents[1]
    folders = [root / "docs" / "measurements" / "issue19" / f for f in ("probe_rounds", "probe_confirm")]
    text = _benchmark("probe_table").markdown(folders)
    assert _presets_block("probe_rounds", text)


def _records(name: str) -> list[dict]:
    """The run records of ``docs/measurements/issue19/<name>/*/`` (the digits model cards cached beside them
    are no records: they have no curve)."""
    folder = Path(__file__).resolve().parents[1] / "docs" / "measurements" / "issue19" / name
    records = [json.loads(p.read_text()) for p in folder.glob("*/*.json")]
    return [r for r in records if "curve" in r]


def _ran_as_named(records: list[dict], ran: dict[str, dict], demo_step) -> None:
    """Each record ran the settings its name maps to in ``ran``; where ``demo_step(record)``, with the digits demo's
    Adam 2e-4 (compare_presets' digits base) for ``outer_lr``."""
    for r in records:
        expected = {**ran[r["name"]], **({"outer_lr": 2e-4} if demo_step(r) else {})}
        assert {k: r["config"].get(k) for k in expected} == expected, r["name"]


def _probe_tables(name: str, every: bool = False) -> tuple[str, str]:
    """``probe_table.py``'s table and summary of ``docs/measurements/issue19/<name>`` (``every``: ``--all``),
    after checking that docs/presets.md holds them as its blocks ``name`` and ``name_summary``."""
    folders = [Path(__file__).resolve().parents[1] / "docs" / "measurements" / "issue19" / name]
    module = _benchmark("probe_table")
    text, summary = module.markdown(folders, every), module.summary(folders, every=every)
    assert _presets_block(name, text)
    assert _presets_block(f"{name}_summary", summary)
    return text, summary


def test_the_accuracy_guard_table_in_presets_is_generated_from_its_records():
    """docs/presets.md's "An accuracy guard" table is `probe_table.py` of its record folder, and its runs
    rolled back at least one round (the ↺ marks come from the records)."""
    text, summary = _probe_tables("guard")
    assert "↺" in text and text.count("b2cpg") >= 5
    # the same records per configuration and model over their seeds
    assert "b2cpg_gtsrb_blend | 3 |" in summary


def test_the_stop43_table_in_presets_is_generated_from_its_records():
    """docs/presets.md's "Anchoring clean accuracy" table is probe_table.py of stop 43's records."""
    text, summary = _probe_tables("stop43")
    assert "b2csgr2d1" in text and "b2csgr2w17" in text
    assert "b2csgr2n100_cifar_multi7 | 2 |" in summary


def test_the_stop44_table_in_presets_is_generated_from_its_records():
    """docs/presets.md's "A smooth δ" tables are probe_table.py --all of stop 44's records (runs without a probe
    included), and the smooth search ran in them."""
    text, summary = _probe_tables("stop44", every=True)
    assert "b2r2n100s3_cifar_multi7_seed2" in text and "b2csgr2n100cs3_cifar_multi7_seed0" in text
    assert "b2r2n100s3_cifar_multi7 | 3 |" in summary
    records = _records("stop44")
    assert records and all(r["config"]["smooth_search"] == 3 for r in records)


def test_the_stop45_table_in_presets_is_generated_from_its_records():
    """docs/presets.md's stop-45 tables (the candidate on the remaining development rows, and the digits
    ablation) are probe_table.py --all of stop 45's records, and each record ran the configuration its name
    says."""
    text, _ = _probe_tables("stop45", every=True)
    assert "b2r2n100s3f_gtsrb_smooth_seed0" in text and "n100_dp_small_vgg_n100_split0_seed0" in text
    records = _records("stop45")
    n100 = {"norm": "l2", "norm_bound": 100}
    b2r2 = {**n100, "bounded_search": 10, "per_delta_optimizer": True, "inner_restarts": 2}
    ran = {"d15b100": {"norm_bound": None, "smooth_search": None, "bounded_search": None, "clean_distill": 0.0},
           "n100": {**n100, "bounded_search": None, "smooth_search": None},
           "b2r2n100": {**b2r2, "smooth_search": None}, "b2r2n100s3f": {**b2r2, "smooth_search": 3, "smooth_rounds": "first"},
           "d15b100d1": {"norm_bound": None, "clean_distill": 1.0}, "d15d1": {"norm_bound": None, "clean_distill": 1.0},
           "d15": {"norm_bound": None, "clean_distill": 0.0}}
    assert {r["name"] for r in records} == set(ran)
    for r in records:
        assert {k: r["config"][k] for k in ran[r["name"]]} == ran[r["name"]], r["name"]


def test_the_stop46_table_in_presets_is_generated_from_its_records():
    """docs/presets.md's "Small clean sets" tables are probe_table.py --all of stop 46's records, and each record
    ran the configuration its name says (the θ step, the distillation and the size rules)."""
    text, _ = _probe_tables("stop46", every=True)
    assert "sz_trojan_wm_c500_seed0" in text and "lr28d1_dp_small_vgg_n100_split0_seed0" in text
    records = _records("stop46")
    plain = {"outer_lr": 2e-3, "outer_steps": None, "clean_distill": 0.0, "outer_lr_size": None,
             "clean_distill_size": None}
    ran = {"d15": plain, "d15d1": {**plain, "clean_distill": 1.0}, "d15d3": {**plain, "clean_distill": 3.0},
           "d15d10": {**plain, "clean_distill": 10.0}, "o5": {**plain, "outer_steps": 5},
           "o2": {**plain, "outer_steps": 2}, "lr5": {**plain, "outer_lr": 5e-4}, "lr2": {**plain, "outer_lr": 2e-4},
           "lr28": {**plain, "outer_lr": 2.8e-4}, "lr28d1": {**plain, "outer_lr": 2.8e-4, "clean_distill": 1.0},
           "sz": {**plain, "outer_lr_size": 5000, "clean_distill": 1.0, "clean_distill_size": 100},
           "szl": {**plain, "outer_lr_size": 5000},
           "sz2": {**plain, "outer_lr_size": 5000, "clean_distill": 1.0, "clean_distill_size": 200}}
    assert {r["name"] for r in records} <= set(ran) and {"d15", "sz", "lr28d1"} <= {r["name"] for r in records}
    # run_digits_demo.sh: the demo's batch and step (compare_presets' digits base)
    _ran_as_named(records, ran, demo_step=lambda r: r["config"]["batch_size"] == 25)


def test_the_stop48_table_in_presets_is_generated_from_its_records():
    """docs/presets.md's stop-48 tables (the candidate on GTSRB's failing rows with the other defense seeds) are
    probe_table.py --all of stop 48's records, each ran the candidate on the seed its name says, and the one miss
    the text names is there."""
    text, summary = _probe_tables("stop48", every=True)
    assert "b2r2n100s3f_gtsrb_blend | 2 |" in summary and "b2r2n100s3f_gtsrb_l2inv | 3 |" in summary
    records = _records("stop48")
    candidate = {"norm": "l2", "norm_bound": 100, "bounded_search": 10, "per_delta_optimizer": True,
                 "inner_restarts": 2, "smooth_search": 3, "smooth_rounds": "first", "clean_distill": 0.0}
    # run_candidate_seeds.sh no_smooth: the candidate without its smooth δ
    no_smooth = {**candidate, "smooth_search": None, "smooth_rounds": "every"}
    _ran_as_named(records, {"b2r2n100s3f": candidate, "b2r2n100": no_smooth}, demo_step=lambda r: False)
    assert sorted((r["name"], r["tag"], r["seed"]) for r in records) == [
        ("b2r2n100", "gtsrb_blend", 2), ("b2r2n100", "gtsrb_trojan_wm", 1),
        ("b2r2n100s3f", "gtsrb_blend", 1), ("b2r2n100s3f", "gtsrb_blend", 2), ("b2r2n100s3f", "gtsrb_l2inv", 0),
        ("b2r2n100s3f", "gtsrb_l2inv", 1), ("b2r2n100s3f", "gtsrb_l2inv", 2), ("b2r2n100s3f", "gtsrb_trojan_wm", 0),
        ("b2r2n100s3f", "gtsrb_trojan_wm", 1)]
    over = [(r["name"], r["tag"], r["seed"]) for r in records if r["curve"][-1]["asr"] > 0.10]
    assert sorted(over) == [("b2r2n100", "gtsrb_trojan_wm", 1), ("b2r2n100s3f", "gtsrb_blend", 1)]
    assert all(r["clean_size"] == 5000 and len(r["curve"]) == 5 for r in records)


def test_the_stop47_table_in_presets_is_generated_from_its_records():
    """docs/presets.md's stop-47 tables (the step cap, the faded anchor, the models the rule was not chosen on) are
    probe_table.py --all of stop 47's records, and each record ran the configuration its name says."""
    text, _ = _probe_tables("stop47", every=True)
    assert "authors_ss_c100_seed0" in text and "ss_blend_c100_seed0" in text
    plain = {"outer_lr": 2e-3, "clean_distill": 0.0, "outer_lr_size": None, "outer_lr_size_cap": None,
             "clean_distill_size": None, "clean_distill_until": None, "bounded_search": None, "smooth_search": None}
    cap = {"outer_lr_size": 5000, "outer_lr_size_cap": 2e-3}
    faded = {"clean_distill": 1.0, "clean_distill_size": 100, "clean_distill_until": 5000}
    szc = {**plain, **cap, "clean_distill": 1.0, "clean_distill_size": 100}
    b2 = {"norm": "l2", "norm_bound": 100, "bounded_search": 10, "per_delta_optimizer": True, "inner_restarts": 2,
          "smooth_search": 3, "smooth_rounds": "first"}
    ran = {"d15": plain, "ss": {**plain, **cap, **faded}, "szc": szc, "b2sz": {**szc, **b2},
           "b2szb100": {**szc, **b2, "batch_size": 100}, "szcl": {**plain, **cap}, "d1f": {**plain, **faded},
           "lr5d1f": {**plain, **faded, "outer_lr": 5e-4}, "lr1d1f": {**plain, **faded, "outer_lr": 1e-3}}
    records = _records("stop47")
    assert {r["name"] for r in records} == set(ran)
    _ran_as_named(records, ran, demo_step=lambda r: r["task"] == "digits")  # compare_presets' digits base
    pattern = _probe_tables("stop47_pattern", every=True)[0]  # noise in the stamp's mask (patch_pattern "random")
    assert "ssr_c100_seed0" in pattern
    pattern_records = _records("stop47_pattern")
    assert {r["name"] for r in pattern_records} == {"ssr"}
    _ran_as_named(pattern_records, {"ssr": {**ran["ss"], "patch_pattern": "random"}}, demo_step=lambda r: False)
    rounds = {r["tag"]: r for r in _records("stop47_rounds")}  # the default with 5 and 10 rounds
    assert "authors_d15_c500_r10_seed0" in _probe_tables("stop47_rounds", every=True)[0]
    assert {t: (r["name"], len(r["curve"]), r["clean_size"]) for t, r in rounds.items()} == \
        {"c500_r5": ("d15", 5, 500), "c500_r10": ("d15", 10, 500)}
    assert all(r["curve"][-1]["asr"] > 0.2 for r in rounds.values())
    # "Not the stamp": after ss's round 1 on the authors' checkpoint its stamp no longer works, the backdoor does
    signal = {r["name"]: r["curve"][0] for r in _records("stop47_signal")}
    assert signal["ss"]["patch_pixels"] == 9 and signal["ss"]["patch_fooling_after"] < 0.05 < 0.9 < signal["ss"]["asr"]
    assert signal["d15"]["patch_fooling_after"] < 0.05 and signal["d15"]["asr"] < 0.05


def test_the_class_screen_table_in_presets_is_generated_from_its_traces():
    """docs/presets.md's "A screen for the class search" table is `class_screen.py --summary` of its traces."""
    root = Path(__file__).resolve().parents[1]
    traces = list((root / "docs" / "measurements" / "issue19" / "class_screen").glob("*.json"))
    assert traces
    text = _benchmark("class_screen").markdown(traces)
    assert _presets_block("class_screen", text)


def test_the_new_default_table_shows_records_of_the_default():
    """The verdict's records ran ``IBAUConfig()`` itself: only each task's seed, rounds and (digits: the
    demo's) outer step differ, and the batch size where the name says so (`d15`: the digits task's 25), so
    the table cannot drift from the code's default. Options added since a record was written count at the
    value that runs what it ran (`LATER_FIELDS`), and a search mode changed since counts where the record shows
    the same run (``classes_until_found`` with a stamp in round 1). Records with fewer than 400 clean images ran
    the default before its small-set rules (stop 50), and only those."""
    from ibau import IBAUConfig
    from ibau.demo import demo_config
    module = _benchmark("presets_table")
    own = {"seed", "rounds", "batch_size", "device", "outer_lr"}
    seen = {name: 0 for name in module.DEFAULT_NAMES}
    before_rules = dict(seen)
    for path in sorted(module.FOLDER.rglob("*.json")):
        rec = json.loads(path.read_text())
        if rec.get("name") not in seen:
            continue
        cfg, expected = {**module.LATER_FIELDS, **rec["config"]}, IBAUConfig().to_dict()
        n, step, skip = rec["clean_size"], {"outer_lr": cfg["outer_lr"]}, set(own)
        if IBAUConfig(**step).size_rules(n) != IBAUConfig(**step, **NO_SIZE_RULES).size_rules(n):
            # fewer than 400 clean images: the default before its small-set rules (stop 50), as the verdict says
            expected.update(NO_SIZE_RULES)
            before_rules[rec["name"]] += 1
        else:  # from 400 images on the rules are inert: the run is the default's whatever they were set to
            ran = IBAUConfig(**{k: cfg[k] for k in IBAUConfig.SIZE_FIELDS})
            assert ran.size_rules(n) == IBAUConfig(**step).size_rules(n), path.name
            skip |= set(IBAUConfig.SIZE_FIELDS)
        if cfg["patch_search"] == "classes_until_found" and expected["patch_search"] == "classes_first_round":
            # the default's search before issue 19: the same run wherever round 1 found a stamp (neither
            # searches again), which each of these records shows
            rounds = [p for p in rec["curve"] if "patch_pixels" in p]
            assert rounds and rounds[0]["patch_pixels"] is not None, path.name
            cfg["patch_search"] = expected["patch_search"]
        assert {k: v for k, v in cfg.items() if k not in skip} == {k: v for k, v in expected.items() if k not in skip}, path.name
        assert cfg["outer_lr"] == (demo_config().outer_lr if rec["task"] == "digits" else expected["outer_lr"]), path.name
        if rec["name"] == "d15b100" or rec["task"] != "digits":
            assert cfg["batch_size"] == expected["batch_size"], path.name
        seen[rec["name"]] += 1
    assert seen["d15"] >= 40 and seen["d15b100"] >= 25  # 8 cases × 5 seeds; the 5 digits cases at batch 100
    assert before_rules == {"d15": 15, "d15b100": 15}  # digits with 100 (BatchNorm, GroupNorm) and 300 images


def test_the_batchnorm_refit_table_in_presets_is_generated_from_its_records():
    """docs/presets.md's BatchNorm-refit table is `bn_refit.py --table` of its two records."""
    root = Path(__file__).resolve().parents[1]
    folder = root / "docs" / "measurements" / "issue19" / "bn_refit"
    text = _benchmark("bn_refit").table([folder / "gtsrb.json", folder / "cifar.json"])
    assert text.count("\n") >= 12  # a header, a rule and the 12 models' rows
    assert _presets_block("bn_refit", text)


def test_the_anp_threshold_table_in_baselines_is_generated_from_its_sweep():
    """docs/baselines.md's ANP table is `anp_thresholds.py --table` of its sweep, and the sweep marks what the
    defender's search chose and what BackdoorBench's look at the test set would have."""
    root = Path(__file__).resolve().parents[1]
    path = root / "docs" / "measurements" / "issue19" / "baselines" / "anp_thresholds_gtsrb_badnets.json"
    sweep = json.loads(path.read_text())
    text = _benchmark("anp_thresholds").table(sweep)
    assert len(sweep["rows"]) == 19 and "the search" in text
    assert f"<!-- table:anp_thresholds -->\n{text}\n<!-- /table -->" in (root / "docs" / "baselines.md").read_text()
    # the authors' checkpoint: the masks collapse the model, so neither rule picks a threshold
    authors = json.loads(path.with_name("anp_thresholds_authors.json").read_text())
    text = _benchmark("anp_thresholds").table(authors)
    assert authors["search"] is None and authors["oracle"] is None and "the search" not in text
    assert f"<!-- table:anp_thresholds_authors -->\n{text}\n<!-- /table -->" in (root / "docs" / "baselines.md").read_text()


#: Stop 49's step between (the step 1e-3 and the anchor at 100 images, faded out at 5,000), the records' `mid`.
MID = {"outer_lr_size": 5000, "outer_lr_size_cap": 7.07e-3, "clean_distill": 1.0, "clean_distill_size": 100,
       "clean_distill_until": 5000}


def test_the_stop50_table_in_presets_is_generated_from_its_records():
    """docs/presets.md's stop-50 tables (three changes of the default's small-set rules screened on Blend) are
    probe_table.py --all of stop 50's records, each ran what its name says with 100 clean images."""
    _, summary = _probe_tables("stop50", every=True)
    assert "lr14_blend_c100 | 3 | 6.85" in summary and "d05_blend_c100 | 3 | 12.41" in summary
    records = _records("stop50")
    rules = {**SMALL_CLEAN_RULES, "perturb_fraction": 0.01}
    candidate = {"norm": "l2", "norm_bound": 100, "bounded_search": 10, "per_delta_optimizer": True,
                 "inner_restarts": 2, "smooth_search": 3, "smooth_rounds": "first"}
    at_100 = {"pf10": {**rules, "perturb_fraction": 0.1}, "lr14": {**rules, "outer_lr_size_cap": 2.83e-3},
              "d05": {**rules, "clean_distill": 0.5}, "cand": {**rules, **candidate}}
    _ran_as_named([r for r in records if r["clean_size"] == 100], at_100, demo_step=lambda r: False)
    mid = {**MID, "perturb_fraction": 0.01}
    _ran_as_named([r for r in records if r["clean_size"] == 500], {"d15": {}, "mid": mid}, demo_step=lambda r: False)
    assert {(r["name"], r["tag"], r["clean_size"]) for r in records if r["name"] not in ("cand", "d15", "mid")} <= \
        {(n, "blend_c100", 100) for n in ("pf10", "lr14", "d05")}
    assert {r["clean_size"] for r in records if r["name"] in ("d15", "mid")} == {500}
    assert "authors_cand_c100 | 1 | 35.08" in summary  # the candidate leaves the authors' backdoor with 100 images
    assert "authors_mid_c500 | 3 | 13.13" in summary  # seed 0's draw keeps it with 500 images


def test_the_stop51_tables_in_presets_are_generated_from_their_records():
    """docs/presets.md's stop-51 tables (three stamp rules) are probe_table.py --all of stop 51's compare_presets
    records, each ran what its name says, and variant_rounds.py of its bench suites, whose kept column ran
    patch_rounds kept and whose default column the default."""
    _, summary = _probe_tables("stop51", every=True)
    assert "authors_above36_c500 | 3 | 12.63" in summary and "authors_am36_c500 | 3 | 13.00" in summary
    assert "d15_blend | 3 | 15.51" in summary and "kept_blend | 3 | 13.28" in summary
    above = {"patch_search_above": 36, "patch_margin": None}
    margin = {"patch_search_above": 36, "patch_margin": 0.3, "patch_margin_floor": 0.8}
    _ran_as_named(_records("stop51"), {"above36": above, "am36": margin,
                                       "am36r": {**margin, "patch_pattern": "random", "patch_rounds": "found"},
                                       "am36rk": {**margin, "patch_pattern": "random", "patch_rounds": "kept"},
                                       "d15": {"patch_rounds": "found", "patch_margin": None, "patch_search_above": None},
                                       "kept": {"patch_rounds": "kept", "patch_margin": None, "patch_search_above": None}},
                  demo_step=lambda r: False)
    module = _benchmark("variant_rounds")
    root = Path(__file__).resolve().parents[1] / "docs" / "measurements"
    for folder, suite, block in (("issue17/cifar", "stop51_kept_cifar", "stop51_kept_cifar"),
                                 ("issue17/gtsrb", "stop51_kept_gtsrb", "stop51_kept_gtsrb"),
                                 ("issue19/stop51/gtsrb_rerun", "stop51_default_gtsrb_rerun", "stop51_gtsrb_rerun")):
        cells = module.finished_cells(root / folder, suite)
        assert _presets_block(block, module.rounds_table(cells) + "\n\n" + module.summary_table(cells))
        for c in cells:
            # a record without the setting ran before it existed, as "found"
            assert c["record"]["config"].get("patch_rounds", "found") == ("kept" if c["variant"] == "kept" else "found")


def test_the_stop52_tables_in_presets_are_generated_from_their_records():
    """docs/presets.md's stop-52 tables (keeping round 1's stamp) are probe_table.py --all of stop 52's records on the
    authors' checkpoint, each ran what its name says and the kept column restamped round 1's stamp every round, and
    variant_rounds.py of the GTSRB confirmation suite."""
    _, summary = _probe_tables("stop52", every=True)
    assert "authors_d15 | 3 | 2.10" in summary and "authors_kept | 3 | 2.29" in summary
    records = _records("stop52")
    _ran_as_named(records, {"d15": {"patch_rounds": "found"}, "kept": {"patch_rounds": "kept"}},
                  demo_step=lambda r: False)
    for r in records:
        stamps = [c["patch_pixels"] for c in r["curve"]]
        assert stamps[0] is not None and stamps[1:] == ([stamps[0]] * 2 if r["name"] == "kept" else [None, None])
    # the confirmation on GTSRB Trojan WM model seed 1: variant_rounds.py of its bench suite, both columns complete
    module = _benchmark("variant_rounds")
    folder = Path(__file__).resolve().parents[1] / "docs" / "measurements" / "issue19" / "confirm" / "gtsrb"
    cells = module.finished_cells(folder, "confirm_kept_gtsrb")
    assert len(cells) == 6
    assert _presets_block("stop52_confirm_gtsrb",
                          module.rounds_table(cells, classes=True) + "\n\n" + module.summary_table(cells))
    for c in cells:
        assert c["record"]["config"]["patch_rounds"] == ("kept" if c["variant"] == "kept" else "found")


def test_the_stop53_tables_in_presets_are_generated_from_their_records():
    """docs/presets.md's stop-53 tables (the class that stands out by ‖δ‖₁) are variant_rounds.py of the two
    development suites on issue 17's GTSRB Trojan WM model, each variant ran what its name says, and the class
    search's figures quoted beside them are class_stamps.py's record."""
    import torch

    from ibau.unlearn.inner import l1_anomaly
    module = _benchmark("variant_rounds")
    root = Path(__file__).resolve().parents[1] / "docs" / "measurements"
    ran = {"default": {"patch_pick": "smallest", "patch_rounds": "found"},
           "l1": {"patch_pick": "l1", "patch_rounds": "found"},
           "l1kept": {"patch_pick": "l1", "patch_rounds": "kept"}}
    for suite in ("stop53_l1_gtsrb", "stop53_l1kept_gtsrb"):
        cells = module.finished_cells(root / "issue17" / "gtsrb", suite)
        assert len(cells) == 6 and {c["record"]["environment"]["cpu_capability"] for c in cells} == {"AVX2"}
        assert _presets_block(suite, module.rounds_table(cells, classes=True, stamp_classes=True) + "\n\n"
                              + module.summary_table(cells))
        for c in cells:
            config = c["record"]["config"]
            assert {k: config.get(k, ran["default"][k]) for k in ran[c["variant"]]} == ran[c["variant"]]  # absent: older
    # their controls: the default and kept on the same model, machine and kernels
    cells = module.finished_cells(root / "issue19" / "stop53" / "gtsrb_avx2", "stop53_kept_gtsrb_avx2")
    assert len(cells) == 6 and {c["record"]["environment"]["cpu_capability"] for c in cells} == {"AVX2"}
    assert _presets_block("stop53_kept_gtsrb_avx2", module.rounds_table(cells, classes=True, stamp_classes=True)
                          + "\n\n" + module.summary_table(cells))
    for c in cells:
        assert c["record"]["config"]["patch_rounds"] == ("kept" if c["variant"] == "kept" else "found")
    stamps = json.loads((root / "issue19" / "stop53" / "class_stamps_gtsrb_trojan_wm.json").read_text())
    assert stamps["target"] == 2 and len(stamps["classes"]) == 43
    norms = {c["class"]: torch.tensor([c["l1"]]) for c in stamps["classes"]}
    suspect, index = l1_anomaly(norms)
    assert suspect == 2 and round(index, 2) == 2.19
    rates = {c["class"]: {r["pixels"]: r["rate"] for r in c["stamps"]} for c in stamps["classes"]}
    assert [round(rates[2][k], 2) for k in (16, 36, 64, 100)] == [0.42, 0.72, 0.93, 1.0]
    assert [round(rates[5][k], 2) for k in (16, 36, 64, 100)] == [0.41, 0.73, 0.9, 0.99]
    spill = {k: [r["class"] for c in stamps["classes"] for r in c["stamps"] if r["pixels"] == k and r["class"] != c["class"]]
             for k in (16, 36, 64, 100, 144)}  # where the other classes' stamps send the clean images
    assert [spill[k].count(2) for k in spill] == [5, 12, 14, 15, 16]
    assert [spill[k].count(5) for k in spill] == [19, 15, 14, 10, 4]


def test_the_stop54_confirmation_tables_in_presets_are_generated_from_their_records():
    """docs/presets.md's stop-54 tables (two candidates on the GTSRB Trojan WM model trained afterwards) are
    variant_rounds.py of the confirmation suites, each variant ran what its name says, on model seed 1, and the
    ℓ1 pick's one run found no class standing out (so it is the default's computation)."""
    module = _benchmark("variant_rounds")
    folder = Path(__file__).resolve().parents[1] / "docs" / "measurements" / "issue19" / "confirm" / "gtsrb"
    ran = {"l1kept": {"patch_pick": "l1", "patch_rounds": "kept"},
           "b2r2n100s3f": {"norm": "l2", "norm_bound": 100, "bounded_search": 10, "inner_restarts": 2,
                           "smooth_search": 3, "smooth_rounds": "first"},
           "default": {"patch_pick": "smallest", "patch_rounds": "found", "smooth_search": None}}
    for suite, count in (("confirm_l1kept_gtsrb", 4), ("confirm_b2r2n100s3f_gtsrb", 6)):
        cells = module.finished_cells(folder, suite)
        assert len(cells) == count and {c["record"]["environment"]["cpu_capability"] for c in cells} == {"AVX512"}
        assert _presets_block(f"stop54_{suite}", module.rounds_table(cells, classes=True, stamp_classes=True)
                              + "\n\n" + module.summary_table(cells))
        for c in cells:
            config = c["record"]["config"]
            assert c["train"].startswith("train-trojan_wm-r0.2-s1-") and config["rounds"] == 5
            assert {k: config.get(k, ran["default"].get(k)) for k in ran[c["variant"]]} == ran[c["variant"]]  # absent: older
    l1 = [c for c in module.finished_cells(folder, "confirm_l1kept_gtsrb") if c["variant"] == "l1kept"][0]
    first = l1["record"]["rounds"][0]
    assert (first["patch_suspect"], first["patch_anomaly"], first["patch_pixels"]) == (33, 1.8267, None)


def test_the_stop49_table_in_presets_is_generated_from_its_records():
    """docs/presets.md's stop-49 tables (small clean sets: augmentation, SGD, the fine-tuning control) are
    probe_table.py --all of stop 49's records, each ran what its name says with 100 clean images."""
    _, summary = _probe_tables("stop49", every=True)
    assert "authors_ftc_c100 | 1 |" in summary and "ftc_blend_c100 | 1 | 28.20" in summary
    records = _records("stop49")
    _ran_as_named(records, {"d15": {"outer_augment": "none", "solver_iters": 2},
                            "cr": {"outer_augment": "crop", "outer_augment_until": 5000},
                            "fc": {"outer_augment": "flip_crop", "outer_augment_until": 5000},
                            "sgd1": {"outer_optimizer": "sgd", "outer_lr": 0.01},
                            "ftc": {"solver_iters": 0, "patch_threshold": 0},
                            "mid": MID}, demo_step=lambda r: False)
    assert "mid_blend_c100 | 3 | 11.24" in summary and "mid_trojan_wm_c100 | 3 |" in summary
    assert "mid_blend_s1_c100 | 3 | 12.66" in summary and "d15_trojan_wm_s1_c100 | 1 |" in summary  # fresh models
    assert {r["clean_size"] for r in records} == {100}


def test_the_stop55_tables_in_presets_are_generated_from_their_records():
    """docs/presets.md's stop-55 tables (the projected fixed-point map at Cδ 0.5; the blended trigger search on the
    development and the confirmation models) are variant_rounds.py of their suites, and each variant ran what its
    name says."""
    module = _benchmark("variant_rounds")
    root = Path(__file__).resolve().parents[1] / "docs" / "measurements"
    blocks = {"stop55_norm_bound_projected": (root / "issue17" / "gtsrb", "norm_bound_projected", {}),
              "stop55_blend_dev_gtsrb": (root / "issue17" / "gtsrb", "stop55_blend_dev_gtsrb",
                                         {"classes": True, "blend": True}),
              "stop55_confirm_blend_cifar": (root / "issue19" / "confirm" / "cifar", "confirm_blend_cifar",
                                             {"classes": True, "blend": True}),
              "stop55_confirm_blend_gtsrb": (root / "issue19" / "confirm" / "gtsrb", "confirm_blend_gtsrb",
                                             {"classes": True, "blend": True}),
              "stop55_confirm_blend_gtsrb_seed0": (root / "issue19" / "confirm" / "gtsrb",
                                                   "stop55_confirm_blend_gtsrb_seed0", {"classes": True, "blend": True})}
    for name, (folder, suite, options) in blocks.items():
        cells = module.finished_cells(folder, suite)
        assert _presets_block(name, module.rounds_table(cells, **options) + "\n\n" + module.summary_table(cells)), name
        for c in cells:
            config = c["record"]["config"]
            projected = c["variant"].endswith("projected")
            assert config.get("fixed_point_map", "step") == ("projected" if projected else "step")
            assert config.get("blend_search") == (0.1 if c["variant"] == "blend" else None)
            if suite == "norm_bound_projected":
                assert (config["norm"], config["norm_bound"]) == ("l2", 0.5)


def _authors_blend_line() -> str:
    """docs/presets.md's line on stop 55's blended search on the authors' checkpoint, from its records."""
    folder = Path(__file__).resolve().parents[1] / "docs" / "measurements" / "issue19" / "stop55" / "authors" / "authors"
    records = [json.loads(f.read_text()) for f in sorted(folder.glob("blend_seed*.json"))]
    assert [r["seed"] for r in records] == list(range(len(records))) and len(records) >= 4
    for r in records:
        assert r["config"]["blend_search"] == 0.1 and r["config"]["rounds"] == 3 and r["clean_size"] == 5000
    acc = [100 * r["curve"][-1]["acc"] for r in records]
    asr = [100 * r["curve"][-1]["asr"] for r in records]
    return (f"ACC after round 3 is {' / '.join(f'{a:.2f}' for a in acc)}% (mean {sum(acc) / len(acc):.2f}; before "
            f"78.44%), ASR {' / '.join(f'{a:.2f}' for a in asr)}%.")


def test_the_stop55_authors_line_in_presets_is_made_from_its_records():
    presets = (Path(__file__).resolve().parents[1] / "docs" / "presets.md").read_text()
    assert _authors_blend_line() in " ".join(presets.split())


def test_the_stop56_screen_table_in_presets_is_blend_screen_py_of_its_records():
    """docs/presets.md's stop-56 table of the blend screen (how far round 1's kept class stands out, per model) is
    blend_screen.py --summary of its records, and blend_gate 0.45 lets through the models the page names."""
    from ibau.unlearn.blend import standout
    module = _benchmark("blend_screen")
    folder = Path(__file__).resolve().parents[1] / "docs" / "measurements" / "issue19" / "blend_screen"
    paths = sorted(folder.glob("*.json"))
    assert len(paths) == 23 and _presets_block("stop56_blend_screen", module.markdown(paths))
    through = set()
    for path in paths:
        run = json.loads(path.read_text())
        assert (run["alpha"], run["screen_steps"], run["clean_size"]) == (0.1, 10, 5000)
        if standout(run["rates"]) >= 0.45:
            model = Path(run["model"])
            through.add(f"{model.parents[2].name} {model.parent.name.split('-r0.2')[0][len('train-'):]}")
    assert through == {"cifar blend", "gtsrb blend", "cifar smooth", "gtsrb smooth", "cifar multi7", "gtsrb multi7",
                       "gtsrb l2_inv"}


def _blend_blocks(blocks: dict[str, Path], required: set[str], fields: tuple[str, ...],
                  ran: dict[str, tuple], held_back: bool = False) -> list[dict]:
    """The generated blend blocks of docs/presets.md that are there (``required`` must be): each is
    variant_rounds.py of its suite's finished cells, and each variant ran with the ``fields`` its name says.
    Returns the cells."""
    module = _benchmark("variant_rounds")
    presets = (Path(__file__).resolve().parents[1] / "docs" / "presets.md").read_text()
    shown = [name for name in blocks if f"<!-- table:{name} -->" in presets]
    assert required <= set(shown)
    every = []
    for name in shown:
        cells = module.finished_cells(blocks[name], name)
        assert cells and _presets_block(name, module.rounds_table(cells, classes=True, blend=True, held_back=held_back)
                                        + "\n\n" + module.summary_table(cells)), name
        for c in cells:
            assert tuple(c["record"]["config"].get(f) for f in fields) == ran[c["variant"]], (name, c["variant"])
        every += cells
    return every


def test_the_stop56_tables_in_presets_are_generated_from_their_records():
    """docs/presets.md's stop-56 run tables (the gated blended search where the gate opens) are variant_rounds.py of
    their suites, and each variant ran what its name says."""
    root = Path(__file__).resolve().parents[1] / "docs" / "measurements"
    blocks = {"stop56_gate_dev_cifar": root / "issue17" / "cifar", "stop56_gate_dev_gtsrb": root / "issue17" / "gtsrb",
              "stop56_gate1_dev_cifar": root / "issue17" / "cifar", "stop56_gate1_dev_gtsrb": root / "issue17" / "gtsrb",
              "stop56_gate_confirm_cifar": root / "issue19" / "confirm" / "cifar",
              "stop56_gate_confirm_gtsrb": root / "issue19" / "confirm" / "gtsrb"}
    _blend_blocks(blocks, {"stop56_gate_dev_cifar", "stop56_gate_dev_gtsrb"}, ("blend_search", "blend_gate", "blend_until"),
                  {"default": (None, None, None), "bgate": (0.1, 0.45, None), "bgate1": (0.1, 0.45, 1)})


def test_the_stop57_tables_in_presets_are_generated_from_their_records():
    """docs/presets.md's stop-57 tables (the slice's stop for the carried pattern) are variant_rounds.py of their
    suites with the held-back slice, each variant ran what its name says, and no round after one that cost the
    slice more than 2 points carried the pattern."""
    root = Path(__file__).resolve().parents[1] / "docs" / "measurements"
    blocks = {"stop57_stop_dev_cifar": root / "issue17" / "cifar", "stop57_stop_dev_gtsrb": root / "issue17" / "gtsrb",
              "stop57_stop_confirm_cifar": root / "issue19" / "confirm" / "cifar",
              "stop57_stop_confirm_gtsrb": root / "issue19" / "confirm" / "gtsrb"}
    cells = _blend_blocks(blocks, {"stop57_stop_dev_cifar", "stop57_stop_dev_gtsrb"},
                          ("blend_search", "blend_gate", "blend_stop"),
                          {"default": (None, None, None), "bstop": (0.1, 0.45, 0.02)}, held_back=True)
    checked = 0
    for c in cells:
        rows = c["record"]["rounds"]
        if c["variant"] != "bstop" or rows[0].get("guard_start") is None:  # records before guard_start: unchecked
            continue
        stopped = False
        for row in rows:
            assert row["blend_stopped"] == stopped
            assert (row["blend_fooling"] is None) == (stopped or (row["round"] > 1 and rows[0]["blend_gated"]))
            stopped = stopped or (not row["blend_gated"] and row["guard_start"] - row["guard_acc"] > 0.02)
        checked += 1
    assert checked >= 3  # GTSRB l2 inv's three seeds at least


def test_the_stop58_tables_in_presets_are_generated_from_their_records():
    """docs/presets.md's stop-58 tables (the slice's stop read as a trend) are variant_rounds.py of their suites with
    the held-back slice, each variant ran what its name says, and the trend rule held in every run: a carried round
    stopped the pattern only when it left the slice more than 2 points below the start and no higher than the carried
    round before it (round 1 never)."""
    root = Path(__file__).resolve().parents[1] / "docs" / "measurements"
    blocks = {"stop58_trend_dev_cifar": root / "issue17" / "cifar", "stop58_trend_dev_gtsrb": root / "issue17" / "gtsrb",
              "stop58_trend5_dev_cifar": root / "issue17" / "cifar", "stop58_trend5_dev_gtsrb": root / "issue17" / "gtsrb",
              "stop58_trend_confirm_cifar": root / "issue19" / "confirm" / "cifar"}
    stop = (0.1, 0.45, 0.02)
    cells = _blend_blocks(blocks, {"stop58_trend_dev_cifar", "stop58_trend_dev_gtsrb", "stop58_trend_confirm_cifar"},
                          ("blend_search", "blend_gate", "blend_stop"),
                          {"default": (None, None, None), "bstop": stop, "btrend": stop, "btrend5": stop},
                          held_back=True)
    checked = 0
    for c in cells:
        config, rows = c["record"]["config"], c["record"]["rounds"]
        if not c["variant"].startswith("btrend"):
            continue
        assert config["blend_stop_rule"] == "trend" and len(rows) == config["rounds"]
        assert config["rounds"] == (5 if c["variant"] == "btrend5" or "model seed 1" in c["attack_label"] else 3)
        stopped, previous = False, None
        for row in rows:
            assert row["blend_stopped"] == stopped
            assert (row["blend_fooling"] is None) == (stopped or (row["round"] > 1 and rows[0]["blend_gated"]))
            if not (stopped or row["blend_gated"]):  # a carried round
                over = row["guard_start"] - row["guard_acc"] > 0.02
                stopped = over and previous is not None and row["guard_acc"] <= previous
                previous = row["guard_acc"]
        checked += 1
    assert checked >= 9  # the development rows' three seeds at least


def test_the_stop59_tables_in_presets_are_generated_from_their_records():
    """docs/presets.md's stop-59 tables (blend_also on the seven-trigger models) are variant_rounds.py of their suites,
    with each trigger's ASR; each variant ran what its name says, and every round that carried the pattern carried a
    pattern for exactly the further classes that round 1's screen singles out by 30 points."""
    from ibau.unlearn.blend import also_classes

    module = _benchmark("variant_rounds")
    root = Path(__file__).resolve().parents[1] / "docs" / "measurements"
    blocks = {"stop59_also_dev_cifar": root / "issue17" / "cifar", "stop59_also_dev_gtsrb": root / "issue17" / "gtsrb",
              "stop59_also_confirm_cifar": root / "issue19" / "confirm" / "cifar",
              "stop59_also_confirm_gtsrb": root / "issue19" / "confirm" / "gtsrb"}
    presets = (Path(__file__).resolve().parents[1] / "docs" / "presets.md").read_text()
    shown = [name for name in blocks if f"<!-- table:{name} -->" in presets]
    assert set(blocks) == set(shown)
    checked = 0
    for name in shown:
        cells = module.finished_cells(blocks[name], name)
        text = (module.rounds_table(cells, classes=True, blend=True, held_back=True) + "\n\n"
                + module.triggers_table(cells) + "\n\n" + module.summary_table(cells))
        assert _presets_block(name, text), name
        for c in cells:
            config, rows = c["record"]["config"], c["record"]["rounds"]
            assert config.get("blend_also") == (0.3 if "also" in c["variant"] else None), (name, c["variant"])
            assert config.get("patch_also", False) == c["variant"].endswith("patch"), (name, c["variant"])
            if config.get("blend_also") is None:
                assert all(row.get("blend_also") is None for row in rows)
                continue
            assert not rows[0]["blend_gated"]  # the gate opens on every seven-trigger model shown
            further = also_classes(rows[0]["blend_screen"], rows[0]["blend_class"], 0.3) or None
            for row in rows:
                carried = row["blend_fooling"] is not None
                assert row["blend_also"] == (further if carried else None)
                assert row["blend_class"] == rows[0]["blend_class"]
            checked += 1
    assert checked >= 9  # the blend_also runs: three seeds on each CIFAR-10 model, two on GTSRB's, patch_also once
