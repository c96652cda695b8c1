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


def test_resnet20_is_the_papers_cifar_net():
    """He et al. 2016 §4.2: 0.27 M parameters with option-A (parameter-free) shortcuts; any input ≥ 8 pixels."""
    from ibau.models.cifar_resnet import ZeroPadShortcut

    model = build_model("resnet20")
    assert sum(p.numel() for p in model.parameters()) == 269_722
    convs = [m for m in model.modules() if isinstance(m, torch.nn.Conv2d)]
    assert len(convs) + 1 == 20  # 19 convolutions and the linear layer
    assert sum(isinstance(m, ZeroPadShortcut) for m in model.modules()) == 2  # entering stages 2 and 3
    for size in (32, 16, 8):  # CIFAR, the embedded digits (16×16), the smallest accepted
        assert build_model("resnet20", num_classes=43, input_size=size)(torch.zeros(2, 3, size, size)).shape == (2, 43)
    shortcut = ZeroPadShortcut(16, 32, 2)
    x = torch.rand(1, 16, 8, 8)
    y = shortcut(x)
    assert y.shape == (1, 32, 4, 4) and torch.equal(y[:, :16], x[:, :, ::2, ::2]) and not y[:, 16:].any()
    with pytest.raises(ValueError, match="input_size must be >= 8"):
        build_model("resnet20", input_size=4)


def test_resnet20_learns_the_digits():
    """A few seconds of training on 16×16 digits (the smallest input the smoke grid could give it) learns."""
    from ibau.data import ImageSet, load_digits
    from ibau.training import train_classifier

    torch.manual_seed(0)
    digits = load_digits(size=16)
    order = torch.randperm(len(digits), generator=torch.Generator().manual_seed(0))
    train, test = digits.subset(order[:300]), digits.subset(order[-300:])
    model = build_model("resnet20", num_classes=10, input_size=16, mean=[0.3] * 3, std=[0.4] * 3)
    train_classifier(model, ImageSet(train.images, train.labels), epochs=3, batch_size=32, progress=False)
    with torch.no_grad():
        acc = float((model(test.images).argmax(1) == test.labels).float().mean())
    assert acc > 0.6, acc
