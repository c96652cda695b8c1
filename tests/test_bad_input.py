"""Bad input: one line naming the problem, ValueError/TypeError from the API, exit 2 from the CLI."""
import pytest
import torch

from conftest import one_line
from ibau import IBAUConfig, unlearn
from ibau.cli import main


@pytest.mark.parametrize("make,match", [
    (lambda x, y: (x, y + 10), "contain class 13 but the model has 4 classes"),
    (lambda x, y: (x, y - 5), "class indices start at 0"),
    (lambda x, y: (x[:, :1], y), r"do not fit the model"),
    (lambda x, y: (x[0], y), r"must be shaped N×C×H×W"),
    (lambda x, y: (x[:0], y[:0]), "is empty"),
    (lambda x, y: (x.masked_fill(x > 0.99, float("nan")), y), "NaN or infinite"),
    (lambda x, y: (x.masked_fill(x > 0.99, float("inf")), y), "NaN or infinite"),
    (lambda x, y: (x, y[:-1]), "give one label per image"),
    (lambda x, y: ((x * 255).to(torch.uint8), y), "floating point"),
    (lambda x, y: (x, y.float()), "integer class indices"),
])
def test_unlearn_rejects_bad_clean_data(tiny_task, make, match):
    model, x, y = tiny_task
    with pytest.raises((ValueError, TypeError), match=match) as info:
        unlearn(model, make(x, y), IBAUConfig(rounds=1), progress=False)
    one_line(str(info.value))


def test_empty_iterable_and_wrong_types(tiny_task):
    model, x, y = tiny_task
    with pytest.raises(ValueError, match="empty"):
        unlearn(model, [], progress=False)
    with pytest.raises(TypeError, match="must be a torch.nn.Module"):
        unlearn("model.pt", (x, y), progress=False)
    with pytest.raises(TypeError, match="must be an IBAUConfig"):
        unlearn(model, (x, y), config={"rounds": 1}, progress=False)


@pytest.mark.parametrize("kwargs,match", [
    ({"norm_bound": 0.0, "norm": "l2"}, "norm_bound"), ({"norm_bound": -1.0, "norm": "l2"}, "norm_bound"),
    ({"norm_bound": 5.0}, "needs a norm"), ({"norm": "l3"}, "norm must be one of"),
    ({"solver": "newton"}, "solver must be one of"), ({"rounds": 0}, "rounds must be >= 1"),
    ({"perturb_fraction": 0.0}, "perturb_fraction"), ({"inner_lr": 0.0}, "inner_lr"),
    ({"round_selection": "best"}, "round_selection must be one of"), ({"probe_bound": 0.0}, "probe_bound"),
    ({"probe_steps": 0}, "probe_steps"), ({"probe_tolerance": -0.1}, "probe_tolerance"),
])
def test_impossible_options(kwargs, match):
    with pytest.raises(ValueError, match=match) as info:
        IBAUConfig(**kwargs)
    one_line(str(info.value))


def test_no_bound_needed_without_a_norm():
    """norm "none" (the default) needs no bound, and refuses one: it would silently constrain nothing."""
    assert IBAUConfig(norm="none").norm_bound is None
    assert IBAUConfig(norm="l2", norm_bound=5.0).replace(norm="none").norm_bound is None
    with pytest.raises(ValueError, match="needs a norm"):
        IBAUConfig(norm="none", norm_bound=0.0)


def test_unknown_preset():
    with pytest.raises(ValueError, match="unknown preset 'turbo'; choose one of: reference, paper, default, fast"):
        IBAUConfig.preset("turbo")


def test_cli_error_is_one_line_exit_2(capsys):
    with pytest.raises(SystemExit) as exc:
        main(["presets", "turbo"])
    assert exc.value.code == 2
    err = capsys.readouterr().err
    assert err.startswith("error: unknown preset 'turbo'") and "Traceback" not in err
    one_line(err.strip())


def test_cli_debug_shows_the_exception():
    with pytest.raises(ValueError, match="unknown preset"):
        main(["--debug", "presets", "turbo"])


def test_cli_demo_rejects_unknown_preset_before_work(capsys, tmp_path):
    with pytest.raises(SystemExit) as exc:
        main(["demo", "--preset", "turbo", "--out", str(tmp_path)])
    assert exc.value.code == 2
    assert "unknown preset" in capsys.readouterr().err
    assert not (tmp_path / "metrics.json").exists()


def test_cli_attack_rejects_unknown_lr_schedule_before_work(capsys, tmp_path):
    with pytest.raises(SystemExit) as exc:
        main(["attack", "--dataset", "digits", "--attack", "badnets", "--lr-schedule", "step",
              "--out", str(tmp_path / "run")])
    assert exc.value.code == 2
    err = capsys.readouterr().err
    assert "unknown lr_schedule 'step'" in err and "Traceback" not in err
    one_line(err.strip())
    assert not (tmp_path / "run").exists()


def test_cli_debug_is_the_parsed_option_not_a_substring(capsys, tmp_path):
    # "--debug" as the value of another option is not the flag: the error stays one line
    with pytest.raises(SystemExit) as exc:
        main(["demo", "--preset", "--debug", "--out", str(tmp_path)])
    assert exc.value.code == 2
    assert "unknown preset '--debug'" in capsys.readouterr().err


def test_cli_keeps_the_traceback_of_a_bug(monkeypatch):
    from ibau.unlearn.config import PRESETS

    def broken(**_):
        raise TypeError("unsupported operand")  # a programming error, not the user's input

    monkeypatch.setitem(PRESETS, "default", broken)
    with pytest.raises(TypeError, match="unsupported operand"):
        main(["presets"])


def test_cli_help_lists_every_registered_name(capsys):
    from ibau.attacks import ATTACKS
    from ibau.defenses import DEFENSES
    from ibau.models import MODELS

    for command, names in (("attack", list(ATTACKS) + list(MODELS)), ("defend", list(DEFENSES) + list(MODELS))):
        with pytest.raises(SystemExit):
            main([command, "--help"])
        text = " ".join(capsys.readouterr().out.replace("│", " ").split())
        missing = [n for n in names if n not in text]
        assert not missing, (command, missing)
