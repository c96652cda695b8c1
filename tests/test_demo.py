"""The embedded demo end to end, at a size CI can afford (the full demo is `make demo`)."""
import json

import pytest

from ibau.cli import main
from ibau.demo import demo_config, run_demo


@pytest.mark.slow
def test_cli_demo_writes_a_report_the_api_reproduces(tmp_path, capsys):
    # the class search at 5 steps a class (the default's 40 cost 100 s here): same code path, CI's budget.
    # One run through the console entry point, one through the API with the same settings: the CLI only adapts
    # run_demo, and a seed reproduces every number (two runs instead of three for the CLI, the files and the seed).
    with pytest.raises(SystemExit) as exc:  # the console entry point exits like a command
        main(["demo", "--out", str(tmp_path / "a"), "--seed", "1", "--epochs", "1", "--rounds", "1",
              "--defense-option", "patch_steps=5", "--no-progress", "--device", "cpu"])
    assert exc.value.code == 0
    out = capsys.readouterr().out
    assert "after:  ACC" in out and "[4/4] wrote" in out
    for name in ("metrics.json", "report.md", "delta.png", "curve.png", "poisoned.safetensors", "unlearned.safetensors"):
        assert (tmp_path / "a" / name).stat().st_size > 0, name
    stored = json.loads((tmp_path / "a" / "metrics.json").read_text())
    assert stored["config"]["patch_steps"] == 5  # --defense-option reached I-BAU
    assert stored["seed"] == 1 and set(stored["before"]) == {"acc", "asr", "ra"}
    assert stored["environment"]["torch"] and "asr" in stored["definitions"]
    assert len(stored["rounds"]) == 1 and {"acc", "asr", "delta_norm"} <= set(stored["rounds"][0])
    report = (tmp_path / "a" / "report.md").read_text()
    assert "| before (poisoned) |" in report and "| after I-BAU |" in report
    again = run_demo(tmp_path / "b", seed=1, epochs=1, config=demo_config(rounds=1, patch_steps=5), device="cpu",
                     progress=False)
    assert again["before"] == stored["before"] and again["after"] == stored["after"]
    assert again["rounds"][0]["delta_norm"] == stored["rounds"][0]["delta_norm"]


def test_cli_demo_refuses_unknown_option(capsys):
    with pytest.raises(SystemExit) as exc:
        main(["demo", "--defense-option", "patch_stepz=5", "--device", "cpu"])
    assert exc.value.code == 2
    err = capsys.readouterr().err
    assert "unknown I-BAU option(s) patch_stepz" in err and "patch_steps" in err and "Traceback" not in err
