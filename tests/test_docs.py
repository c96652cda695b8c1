"""The docs stay true: every command and option of `ibau` is in the README, and docs/results.md shows the
tables its benchmark scripts generate from the committed records."""
import json
from pathlib import Path

import typer

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
                           "classes_authors", "classes_cifar", "classes_digits"}
    for key, text in tables.items():
        assert text.count("\n") >= 3, key  # a header, a rule and at least two rows
        assert text in presets, f"docs/presets.md's {key} table differs from `presets_table.py --doc`"
