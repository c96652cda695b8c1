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
    with pytest.raises(ValueError, match="does not match its card.*missing 44 tensors"):
        load_model(path, ModelCard("small_vgg", 10, [3, 32, 32]))
