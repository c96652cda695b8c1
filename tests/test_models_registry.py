"""Every registered architecture builds, runs on 32×32 inputs, and survives a save/load round trip."""
import pytest
import torch

from ibau.models import MODELS, ModelCard, build_model, load_model, save_model


@pytest.mark.parametrize("arch", sorted(MODELS))
def test_registry_walk(arch, tmp_path):
    torch.manual_seed(0)
    model = build_model(arch, num_classes=7, mean=[0.5] * 3, std=[0.25] * 3).eval()
    x = torch.rand(2, 3, 32, 32)
    out = model(x)
    assert out.shape == (2, 7) and torch.isfinite(out).all()
    card = ModelCard(arch, 7, [3, 32, 32], {"mean": [0.5] * 3, "std": [0.25] * 3})
    loaded, _ = load_model(save_model(model, tmp_path / "m.safetensors", card))
    assert torch.allclose(loaded(x), out, atol=1e-5)


def test_preact_resnet18_size_and_unknown_arch():
    n = sum(p.numel() for p in build_model("preact_resnet18").parameters())
    assert 11.0e6 < n < 11.3e6
    with pytest.raises(ValueError, match="unknown architecture 'vit'"):
        build_model("vit")
