"""`ibau defend` and `ibau evaluate` on a model file, and their one-line errors."""
import json
import pickle

import pytest

from ibau.cli import main
from ibau.demo import demo_config, run_demo


@pytest.fixture(scope="module")
def poisoned(tmp_path_factory):
    out = tmp_path_factory.mktemp("demo")
    # only the poisoned model is used: I-BAU's round here is as cheap as it goes (no class search)
    run_demo(out, seed=0, epochs=2, config=demo_config(rounds=1, patch_threshold=0), device="cpu", progress=False)
    return out / "poisoned.safetensors"


def _run(args):
    with pytest.raises(SystemExit) as exc:
        main(args)
    return exc.value.code


@pytest.mark.slow
def test_defend_then_evaluate(poisoned, tmp_path, capsys):
    out = tmp_path / "defended"
    code = _run(["defend", "--model", str(poisoned), "--dataset", "digits", "--clean-size", "400", "--rounds", "1",
                 "--batch-size", "50", "--defense-option", "patch_steps=5", "--out", str(out), "--no-progress",
                 "--device", "cpu"])
    assert code == 0
    for name in ("model.safetensors", "model.json", "metrics.json", "report.md", "delta.png", "curve.png"):
        assert (out / name).stat().st_size > 0, name
    record = json.loads((out / "metrics.json").read_text())
    assert record["attack"]["name"] == "badnets" and record["sizes"] == {"clean": 400, "held_out": 100}
    assert len(record["rounds"]) == 1 and set(record["after"]) == {"acc", "asr", "ra"}
    checkpoints = [line for line in capsys.readouterr().out.splitlines() if line.startswith("  at ")]
    assert len(checkpoints) == len(record["history"]) and "ASR" in checkpoints[-1]  # one line per checkpoint without bars
    assert _run(["evaluate", "--model", str(out / "model.safetensors"), "--dataset", "digits", "--clean-size", "400"]) == 0
    printed = json.loads(capsys.readouterr().out)
    assert printed["held_out"] == 100 and printed["acc"] == pytest.approx(record["after"]["acc"])
    assert printed["asr"] == pytest.approx(record["after"]["asr"])


@pytest.mark.parametrize("break_it,match", [
    (lambda p: p.with_suffix(".json").write_text(p.with_suffix(".json").read_text().replace('"num_classes": 10', '"num_classes": 7')),
     "does not match its card"),
    (lambda p: p.with_suffix(".json").unlink(), "has no card"),
])
def test_cli_model_file_errors(poisoned, tmp_path, capsys, break_it, match):
    copy = tmp_path / "m.safetensors"
    copy.write_bytes(poisoned.read_bytes())
    copy.with_suffix(".json").write_text(poisoned.with_suffix(".json").read_text())
    break_it(copy)
    assert _run(["evaluate", "--model", str(copy), "--dataset", "digits", "--clean-size", "400"]) == 2
    err = capsys.readouterr().err
    assert match in err and "Traceback" not in err and err.count("\n") == 1


class _Evil:
    def __reduce__(self):
        return (print, ("pwned",))


def test_cli_refuses_code_running_pickle(tmp_path, capsys):
    path = tmp_path / "evil.pt"
    path.write_bytes(pickle.dumps({"state_dict": _Evil()}))
    assert _run(["evaluate", "--model", str(path), "--dataset", "digits", "--arch", "small_vgg", "--clean-size", "400"]) == 2
    captured = capsys.readouterr()
    assert "refusing to load evil.pt" in captured.err and "pwned" not in captured.out


@pytest.mark.parametrize("args,match", [
    (["--dataset", "mnist"], "unknown dataset 'mnist'"),
    (["--dataset", "cifar10"], "needs --data-dir"),
    (["--dataset", "digits", "--clean-size", "0"], "clean size must be between"),
])
def test_cli_dataset_errors(poisoned, capsys, args, match):
    assert _run(["evaluate", "--model", str(poisoned), *args]) == 2
    assert match in capsys.readouterr().err


@pytest.mark.slow
def test_defend_with_a_baseline_and_dp_model_reloads(tmp_path, capsys):
    """--method reaches the registry; dp rebuilds the poisoned set from the card and its GroupNorm model reloads."""
    from ibau.models import load_model

    run = tmp_path / "run"
    assert _run(["attack", "--dataset", "digits", "--attack", "badnets", "--epochs", "1", "--train-limit", "200",
                 "--out", str(run), "--no-progress", "--device", "cpu"]) == 0
    out = tmp_path / "dp"
    assert _run(["defend", "--model", str(run / "model.safetensors"), "--dataset", "digits", "--clean-size", "400",
                 "--method", "dp", "--defense-option", "epochs=1", "--out", str(out), "--no-progress"]) == 0
    record = json.loads((out / "metrics.json").read_text())
    assert record["method"] == "dp" and record["details"]["epsilon"] > 0 and len(record["history"]) == 1
    model, card = load_model(out / "model.safetensors")
    assert card.arch == "dp:small_vgg" and not any("BatchNorm" in type(m).__name__ for m in model.modules())
    capsys.readouterr()
    assert _run(["defend", "--model", str(run / "model.safetensors"), "--dataset", "digits", "--clean-size", "400",
                 "--method", "finetune", "--defense-option", "colour=1", "--out", str(out)]) == 2
    assert "finetune has no setting colour" in capsys.readouterr().err
    assert _run(["defend", "--model", str(run / "model.safetensors"), "--dataset", "digits", "--clean-size", "400",
                 "--method", "finetune", "--rounds", "2", "--out", str(out)]) == 2
    assert "finetune has no setting rounds" in capsys.readouterr().err
    assert _run(["defend", "--model", str(run / "model.safetensors"), "--dataset", "digits", "--clean-size", "400",
                 "--method", "finetune", "--preset", "reference", "--out", str(out)]) == 2
    assert "finetune has no preset 'reference'; its presets are: default" in capsys.readouterr().err
