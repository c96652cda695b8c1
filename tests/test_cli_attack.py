"""`ibau attack`: a poisoned model with its card and trigger files, and an exact resume."""
import json

import pytest
import torch

from ibau.attacks import BadNets, build_attack, parse_attack, poison
from ibau.cli import main
from ibau.models import load_model
from ibau.pipeline.train import restamper, train_poisoned


def test_attack_writes_model_card_and_trigger(tmp_path, capsys):
    with pytest.raises(SystemExit) as exc:
        main(["attack", "--dataset", "digits", "--attack", "badnets", "--epochs", "2", "--train-limit", "400",
              "--out", str(tmp_path), "--no-progress", "--device", "cpu"])
    assert exc.value.code == 0
    model, card = load_model(tmp_path / "model.safetensors")
    meta = card.metadata
    assert meta["attack"] == {"name": "badnets", "size": 4, "margin": 1, "value": 1.0, "target": 8}
    assert len(meta["poisoned_indices"]) == 80 and set(meta["test"]) == {"acc", "asr", "ra"}
    assert card.normalization and len(card.normalization["mean"]) == 3
    assert (tmp_path / "trigger.png").stat().st_size > 0 and not (tmp_path / "checkpoint.pt").exists()
    assert json.loads((tmp_path / "trigger.json").read_text())["name"] == "badnets"
    assert (tmp_path / "train.log").read_text().count("epoch") == 2


@pytest.mark.parametrize("lr_schedule,augment", [("constant", "none"), ("cosine", "none"), ("constant", "flip_crop")])
@pytest.mark.slow
def test_resume_continues_exactly(tmp_path, monkeypatch, lr_schedule, augment):
    kw = dict(train_limit=300, batch_size=64, seed=3, device="cpu", progress=False,
              lr_schedule=lr_schedule, augment=augment)
    train_poisoned("digits", BadNets(), tmp_path / "straight", epochs=3, **kw)

    real_save = torch.save
    saves = []

    def killed_while_writing_second_checkpoint(obj, path, *a, **k):
        saves.append(path)
        if len(saves) == 2:
            raise KeyboardInterrupt  # the process dies while epoch 2's checkpoint is being written
        real_save(obj, path, *a, **k)

    monkeypatch.setattr(torch, "save", killed_while_writing_second_checkpoint)
    with pytest.raises(KeyboardInterrupt):
        train_poisoned("digits", BadNets(), tmp_path / "cut", epochs=3, **kw)
    monkeypatch.setattr(torch, "save", real_save)
    assert len(saves) == 2 and (tmp_path / "cut" / "checkpoint.pt").exists()
    assert torch.load(tmp_path / "cut" / "checkpoint.pt", weights_only=True)["train"]["epoch"] == 1
    assert not (tmp_path / "cut" / "model.safetensors").exists()

    train_poisoned("digits", BadNets(), tmp_path / "cut", epochs=3, resume=True, **kw)
    straight, _ = load_model(tmp_path / "straight" / "model.safetensors")
    resumed, _ = load_model(tmp_path / "cut" / "model.safetensors")
    for (k, a), b in zip(straight.state_dict().items(), resumed.state_dict().values()):
        assert torch.equal(a, b), k
    assert (tmp_path / "cut" / "train.log").read_text().count("epoch") == 3  # epochs 1, 2, 3: none lost or repeated


def _attack(*args):
    with pytest.raises(SystemExit) as exc:
        main(["attack", "--dataset", "digits", "--epochs", "1", "--train-limit", "200", "--no-progress",
              "--device", "cpu", *args])
    return exc.value.code


@pytest.mark.slow
def test_clean_reference_then_optimised_trigger_then_reuse(tmp_path, capsys):
    assert _attack("--attack", "none", "--out", str(tmp_path / "clean")) == 0
    _, card = load_model(tmp_path / "clean" / "model.safetensors")
    assert card.metadata["attack"] is None and card.metadata["poisoned_indices"] == []
    assert set(card.metadata["test"]) == {"acc"} and not (tmp_path / "clean" / "trigger.json").exists()

    assert _attack("--attack", "l2_inv", "--out", str(tmp_path / "l2")) == 2
    assert "--reference-model" in capsys.readouterr().err

    ref = str(tmp_path / "clean" / "model.safetensors")
    assert _attack("--attack", "trojan_sq", "--reference-model", ref, "--target", "3", "--trigger-steps", "5",
                   "--out", str(tmp_path / "sq")) == 0
    spec = json.loads((tmp_path / "sq" / "trigger.json").read_text())
    assert spec["name"] == "trojan_sq" and spec["target"] == 3 and len(spec["pattern"]) == 3
    _, card = load_model(tmp_path / "sq" / "model.safetensors")
    assert card.metadata["attack"] == spec and len(card.metadata["poisoned_indices"]) == 40

    # the saved trigger is reused bit for bit, without a reference model
    assert _attack("--attack", "ignored", "--trigger", str(tmp_path / "sq" / "trigger.json"), "--out", str(tmp_path / "again")) == 0
    assert json.loads((tmp_path / "again" / "trigger.json").read_text()) == spec


def test_multi_trigger_attack_records_components(tmp_path):
    assert _attack("--attack", "badnets:0,blend:3", "--out", str(tmp_path)) == 0
    _, card = load_model(tmp_path / "model.safetensors")
    meta = card.metadata
    assert [t["target"] for t in meta["attack"]["triggers"]] == [0, 3]
    assert sorted(set(meta["poisoned_by_component"])) == [0, 1] and len(meta["poisoned_indices"]) == 40
    assert {"asr:badnets", "asr:blend", "asr", "ra"} <= set(meta["test"])
    assert (tmp_path / "trigger_0_badnets.png").exists() and (tmp_path / "trigger_1_blend.png").exists()


def test_recipes():
    from ibau.pipeline.train import recipe

    assert recipe("paper") == {"epochs": 50, "train_limit": None}
    assert recipe("cpu", epochs=3) == {"epochs": 3, "train_limit": 20000}
    with pytest.raises(ValueError, match="training preset"):
        recipe("fast")


def test_blend_with_a_user_image(tmp_path, capsys):
    from PIL import Image

    Image.new("RGB", (16, 16), (255, 0, 0)).save(tmp_path / "red.png")
    assert _attack("--attack", "blend", "--trigger-option", f"image={tmp_path / 'red.png'}", "--trigger-option",
                   "alpha=0.3", "--out", str(tmp_path / "run")) == 0
    spec = json.loads((tmp_path / "run" / "trigger.json").read_text())
    assert spec["alpha"] == 0.3 and spec["image"].endswith("red.png")
    assert _attack("--attack", "blend", "--trigger-option", "colour=1", "--out", str(tmp_path / "bad")) == 2
    assert "no option colour" in capsys.readouterr().err


@pytest.mark.parametrize("attack,all_to_all", [("badnets", False), ("badnets", True), ("badnets:0,blend:3", False)])
def test_restamper_rebuilds_the_poisoned_set_from_clean_sources(attack, all_to_all):
    g = torch.Generator().manual_seed(0)
    x, y = torch.rand(60, 3, 16, 16, generator=g), torch.randint(0, 10, (60,), generator=g)
    trigger = build_attack(parse_attack(attack, all_to_all=all_to_all))
    p = poison(x, y, trigger, 0.3, num_classes=10, seed=1)
    source, stamp = restamper(x, p, trigger)
    assert torch.equal(source, x)  # every stamped row is back to its clean image
    rows = torch.randperm(60, generator=g)[:25]
    assert torch.allclose(stamp(source[rows].clone(), rows), p.images[rows])  # and stamped again in place


@pytest.mark.slow
def test_attack_with_augmentation_keeps_a_working_backdoor(tmp_path):
    with pytest.raises(SystemExit) as exc:
        main(["attack", "--dataset", "digits", "--attack", "badnets", "--epochs", "6", "--augment", "flip_crop",
              "--out", str(tmp_path), "--no-progress", "--device", "cpu"])
    assert exc.value.code == 0
    meta = load_model(tmp_path / "model.safetensors")[1].metadata
    assert meta["training"]["augment"] == "flip_crop"
    assert json.loads((tmp_path / "metrics.json").read_text())["augment"] == "flip_crop"
    assert meta["test"]["asr"] > 0.9 and meta["test"]["acc"] > 0.8  # the trigger was stamped after the shift


def test_augment_is_refused_for_a_trigger_trained_with_the_model(tmp_path, capsys):
    assert _attack("--attack", "iab", "--augment", "flip_crop", "--out", str(tmp_path)) != 0
    assert "drop --augment flip_crop" in capsys.readouterr().err
