"""Model files: safetensors + card round trip, plain checkpoints, and refusal of code-running pickles."""
import json
import os
import pickle

import pytest
import torch

from ibau.models import ModelCard, load_model, save_model, small_vgg


def _card(**kw):
    return ModelCard("small_vgg", 10, [3, 16, 16], metadata={"attack": "badnets"}, **kw)


def test_small_vgg_has_the_papers_size():
    model = small_vgg(10)
    n = sum(p.numel() for p in model.parameters())
    assert 300_000 < n < 312_000  # SPEC §5: ≈308k
    assert model(torch.zeros(2, 3, 32, 32)).shape == (2, 10)
    assert model[-1].in_features == 2048


def test_round_trip_with_normalisation(tmp_path):
    torch.manual_seed(0)
    model = small_vgg(10, input_size=16, mean=[0.5] * 3, std=[0.25] * 3).eval()
    card = _card(normalization={"mean": [0.5] * 3, "std": [0.25] * 3})
    path = save_model(model, tmp_path / "m.safetensors", card)
    loaded, card2 = load_model(path)
    x = torch.rand(3, 3, 16, 16)
    assert torch.allclose(model(x), loaded(x))
    assert card2.metadata == {"attack": "badnets"}
    assert json.loads((tmp_path / "m.json").read_text())["arch"] == "small_vgg"


@pytest.mark.parametrize("nest", [None, "net", "state_dict", "model"])
def test_plain_checkpoints_load_through_weights_only(tmp_path, nest):
    model = small_vgg(10, input_size=16).eval()
    state = model.state_dict()
    if nest:
        state = {nest: {f"module.{k}": v for k, v in state.items()}, "epoch": 3}
    torch.save(state, tmp_path / "ckpt.pth")
    loaded, _ = load_model(tmp_path / "ckpt.pth", card=_card())
    x = torch.rand(2, 3, 16, 16)
    assert torch.allclose(model(x), loaded(x))


class _Evil:
    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return (open, (self.marker, "w"))


def test_pickle_that_would_run_code_is_refused(tmp_path):
    marker = tmp_path / "PWNED"
    path = tmp_path / "evil.pth"
    with open(path, "wb") as f:
        pickle.dump({"state_dict": _Evil(str(marker))}, f)
    # Sanity: a full unpickle really would create the marker.
    with open(path, "rb") as f:
        pickle.load(f)
    assert marker.exists()
    os.remove(marker)
    with pytest.raises(ValueError, match="refusing to load evil.pth"):
        load_model(path, card=_card())
    assert not marker.exists()


def test_file_not_matching_its_card(tmp_path):
    save_model(small_vgg(10, input_size=16), tmp_path / "m.safetensors", _card())
    card = json.loads((tmp_path / "m.json").read_text())
    card["num_classes"] = 43
    (tmp_path / "m.json").write_text(json.dumps(card))
    with pytest.raises(ValueError, match="does not match its card.*shape mismatch"):
        load_model(tmp_path / "m.safetensors")


def test_missing_card_and_bad_suffix(tmp_path):
    save_model(small_vgg(10, input_size=16), tmp_path / "m.safetensors", _card())
    (tmp_path / "m.json").unlink()
    with pytest.raises(ValueError, match="no model card"):
        load_model(tmp_path / "m.safetensors")
    with pytest.raises(ValueError, match="must end in .safetensors"):
        save_model(small_vgg(10), tmp_path / "m.pt", _card())


def _authors_names(model):
    """The small VGG's tensors under the I-BAU authors' names: features.<i>.* then classifier.*"""
    renamed = {}
    for key, value in model.state_dict().items():
        index, _, rest = key.partition(".")
        renamed[f"classifier.{rest}" if int(index) == len(model) - 1 else f"features.{index}.{rest}"] = value
    return renamed


def test_same_layout_under_other_names_loads_by_layout(tmp_path, caplog):
    torch.manual_seed(0)
    model = small_vgg(10).eval()
    path = tmp_path / "badnets_8_02_ckpt.pth"
    torch.save({"net": _authors_names(model), "acc": 84.9, "epoch": 50}, path)
    with caplog.at_level("INFO", logger="ibau.models.io"):
        loaded, _ = load_model(path, ModelCard("small_vgg", 10, [3, 32, 32]))
    assert "loaded by layout" in caplog.text
    x = torch.rand(2, 3, 32, 32)
    assert torch.equal(loaded(x), model(x))


def test_a_different_layout_is_refused_with_the_first_mismatch(tmp_path):
    state = _authors_names(small_vgg(10))
    state["classifier.weight"] = torch.zeros(43, 2048)  # a GTSRB head for a 10-class card
    state["classifier.bias"] = torch.zeros(43)
    path = tmp_path / "other.pth"
    torch.save({"net": state}, path)
    with pytest.raises(ValueError) as exc:
        load_model(path, ModelCard("small_vgg", 10, [3, 32, 32]))
    message = str(exc.value)
    assert "\n" not in message and "does not match its card" in message
    assert "first shape mismatch at tensor 43: file classifier.weight (43, 2048) vs 25.weight (10, 2048)" in message
    assert "pass the --arch/--num-classes it was made with" in message


# --- issue 18: every new way in (BackdoorBench dicts, the authors' layout, numpy arrays, user code) -------
def _bb(model=None, bd_test=None, **over):
    """A BackdoorBench attack_result.pt dict (save_attack_result's keys)."""
    return {"model_name": "preactresnet18", "num_classes": 10,
            "model": model if model is not None else small_vgg(10, input_size=16).state_dict(),
            "data_path": "./data/cifar10", "img_size": [16, 16, 3], "clean_data": "cifar10", "bd_train": None,
            "bd_test": bd_test, **over}


def _payloads(evil):
    import numpy as np

    sd = small_vgg(10, input_size=16).state_dict()
    return {
        "state_dict": {"state_dict": evil},
        "authors_net": {"net": sd, "acc": evil, "epoch": 50},
        "backdoorbench_bd_test": _bb(bd_test={"bd_data_container": {"data_dict": {np.int64(1): evil}},
                                              "original_index_array": np.arange(2)}),
        "backdoorbench_model_name": _bb(model_name=evil),
        "backdoorbench_model": _bb(model={"conv1.weight": evil}),
    }


@pytest.mark.parametrize("writer", ["pickle", "torch"])
@pytest.mark.parametrize("payload", ["state_dict", "authors_net", "backdoorbench_bd_test", "backdoorbench_model_name",
                                     "backdoorbench_model"])
@pytest.mark.parametrize("entry", ["load_model", "read_object", "cli_evaluate"])
def test_every_load_path_refuses_a_pickle_that_would_run_code(tmp_path, capsys, writer, payload, entry):
    from ibau.cli import main
    from ibau.models.io import read_object

    marker = tmp_path / "PWNED"
    obj = _payloads(_Evil(str(marker)))[payload]
    path = tmp_path / "attack_result.pt"
    if writer == "pickle":
        with open(path, "wb") as f:
            pickle.dump(obj, f)
    else:
        torch.save(obj, path)
    assert not marker.exists()
    if entry == "cli_evaluate":
        with pytest.raises(SystemExit) as exc:
            main(["evaluate", "--model", str(path), "--arch", "small_vgg", "--dataset", "digits", "--clean-size", "450"])
        assert exc.value.code == 2
        message = capsys.readouterr().err
        assert message.count("\n") == 1
    else:
        with pytest.raises(ValueError) as exc:
            load_model(path, card=_card()) if entry == "load_model" else read_object(path)
        message = str(exc.value)
    assert "refusing to load attack_result.pt" in message
    if writer == "torch":  # a zip checkpoint: its globals are listed statically, nothing is run
        assert "it needs io.open" in message
        assert ("it is a BackdoorBench attack_result.pt" in message) == payload.startswith("backdoorbench")
    assert not marker.exists()


def test_backdoorbench_with_in_memory_images_is_refused_and_says_how_to_keep_its_model(tmp_path):
    import numpy as np
    from PIL import Image

    from ibau.models.io import read_object

    path = tmp_path / "attack_result.pt"
    torch.save(_bb(bd_test={"bd_data_container": {"save_folder_path": None,
                                                  "data_dict": {np.int64(3): (Image.new("RGB", (16, 16)), 0, 4)}},
                            "original_index_array": np.array([3]), "poison_indicator": np.zeros(10)}), path)
    with pytest.raises(ValueError) as exc:
        read_object(path)
    message = str(exc.value)
    assert "\n" not in message and "it is a BackdoorBench attack_result.pt" in message and "PIL.Image" in message
    assert "keep its model alone" in message and "--trigger" in message


def test_numpy_arrays_are_read_with_weights_only(tmp_path, caplog):
    """numpy's own array reconstructors are the one addition to weights_only loading: a BackdoorBench file
    keeps its indices in arrays."""
    import numpy as np

    from ibau.models.io import read_object

    path = tmp_path / "attack_result.pt"
    torch.save(_bb(bd_test={"original_index_array": np.arange(3), "poison_indicator": np.zeros(5, np.float32),
                            "bd_data_container": {"data_dict": {np.int64(1): {"path": "a.png", "other_info": [0, 1]}}}}), path)
    with caplog.at_level("INFO", logger="ibau.models.io"):
        obj = read_object(path)
    assert "holds numpy arrays; read them with weights_only=True" in caplog.text
    assert obj["bd_test"]["original_index_array"].tolist() == [0, 1, 2] and obj["model_name"] == "preactresnet18"


def test_a_card_naming_code_is_not_imported_unless_the_caller_names_it(tmp_path, monkeypatch):
    """A downloaded card must not make ibau import a module: its module:factory needs the same trust_arch."""
    import sys

    marker = tmp_path / "IMPORTED"
    (tmp_path / "ibau_evil_card_mod.py").write_text(
        f"open({str(marker)!r}, 'w').close()\nfrom ibau.models import small_vgg as build\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    path = save_model(small_vgg(10, input_size=16), tmp_path / "m.safetensors",
                      ModelCard("ibau_evil_card_mod:build", 10, [3, 16, 16]))
    with pytest.raises(ValueError, match="names the architecture 'ibau_evil_card_mod:build', Python code to import"):
        load_model(path)
    with pytest.raises(ValueError, match="Python code to import"):
        load_model(path, trust_arch="other_mod:build")
    assert not marker.exists() and "ibau_evil_card_mod" not in sys.modules
    model, _ = load_model(path, trust_arch="ibau_evil_card_mod:build")  # the user vouches for it: it runs
    assert marker.exists() and model(torch.rand(1, 3, 16, 16)).shape == (1, 10)
    sys.modules.pop("ibau_evil_card_mod", None)


def test_a_file_without_the_normalisation_layer_gets_the_cards(tmp_path, caplog):
    """A plain small VGG state dict under a card with mean/std: ibau's Normalize goes in front."""
    torch.manual_seed(0)
    bare = small_vgg(10, input_size=16).eval()
    torch.save({"net": bare.state_dict()}, tmp_path / "bare.pth")
    card = ModelCard("small_vgg", 10, [3, 16, 16], {"mean": [0.5] * 3, "std": [0.25] * 3})
    with caplog.at_level("INFO", logger="ibau.models.io"):
        model, _ = load_model(tmp_path / "bare.pth", card)
    assert "input normalisation from the card" in caplog.text
    x = torch.rand(2, 3, 16, 16)
    assert torch.allclose(model(x), bare((x - 0.5) / 0.25), atol=1e-5)
