"""Every registered trigger: stamps in place of nothing, stays in [0, 1], is deterministic, shows its
hyper-parameters; plus checks specific to each family."""
import json

import pytest
import torch
from PIL import Image
from torch import nn

from ibau.attacks import ATTACKS, Blend, make_trigger


def reference():
    """A small untrained conv net and reference images: enough to exercise trigger optimisation."""
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(3, 6, 3, padding=1), nn.ELU(), nn.MaxPool2d(4), nn.Conv2d(6, 8, 3, padding=1),
                          nn.ELU(), nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(8, 10))
    return model, torch.rand(16, 3, 32, 32, generator=torch.Generator().manual_seed(1))


def build(name, **kw):
    model, images = reference()
    fast = {"steps": 3} if ATTACKS[name].needs_reference else {}
    return ATTACKS[name].generate(model, images, seed=0, **fast, **kw)


@pytest.mark.parametrize("name", sorted(ATTACKS))
def test_registry_walk(name):
    trig = build(name)
    x = torch.rand(4, 3, 32, 32, generator=torch.Generator().manual_seed(0))
    x0 = x.clone()
    out = trig.apply(x)
    assert out.shape == x.shape and torch.equal(x, x0)
    assert float(out.min()) >= 0 and float(out.max()) <= 1
    assert not torch.equal(out, x)
    assert torch.equal(build(name).apply(x), out)  # generation is seeded
    assert repr(trig).startswith(type(trig).__name__ + "(") and "target=" in repr(trig)
    spec = json.loads(json.dumps(trig.spec()))
    assert torch.equal(make_trigger(**spec).apply(x), out)  # the JSON spec rebuilds the same trigger
    y = torch.tensor([0, 1, 2, 3])
    assert trig.target_labels(y, 10).tolist() == [trig.target] * 4
    if ATTACKS[name].supports_all_to_all:
        a2a = build(name, all_to_all=True)
        assert a2a.target_labels(y, 4).tolist() == [1, 2, 3, 0] and bool(a2a.victims(y).all())
    else:
        with pytest.raises(ValueError, match="all-to-all"):
            build(name, all_to_all=True)
    if trig.additive:  # pattern and mask exist to compare with a recovered δ
        mask, pattern = trig.mask((3, 32, 32)), trig.pattern((3, 32, 32))
        assert mask.shape == pattern.shape == (3, 32, 32) and float(mask.max()) > 0


@pytest.mark.parametrize("name", sorted(n for n, c in ATTACKS.items() if c.needs_reference))
def test_optimised_triggers_need_a_reference_model(name):
    with pytest.raises(ValueError, match="reference model"):
        ATTACKS[name].generate()
    with pytest.raises(ValueError, match="reference model"):
        if ATTACKS[name].clean_label:  # its spec (the patch) is fine without one; crafting poisons is not
            make_trigger(name).craft(torch.rand(4, 3, 8, 8), torch.tensor([0, 1, 0, 1]), torch.Generator())
        else:
            make_trigger(name)


def test_blend_is_the_convex_mix():
    trig = Blend(alpha=0.3, seed=5)
    x = torch.rand(2, 3, 8, 8)
    p = trig.pattern((3, 8, 8))
    assert torch.allclose(trig.apply(x), 0.7 * x + 0.3 * p)
    assert not torch.equal(p, Blend(seed=6).pattern((3, 8, 8)))


def test_blend_user_image_is_resized(tmp_path):
    Image.new("RGB", (20, 10), (255, 0, 0)).save(tmp_path / "red.png")
    p = Blend(image=tmp_path / "red.png").pattern((3, 32, 32))
    assert p.shape == (3, 32, 32) and float(p[0].min()) == 1.0 and float(p[1].max()) == 0.0
    with pytest.raises(ValueError, match="does not exist"):
        Blend(image=tmp_path / "nope.png")
    with pytest.raises(ValueError, match="alpha"):
        Blend(alpha=0.0)


def test_blend_test_image_is_a_stored_image_of_another_class(tmp_path):
    """BackdoorBench's Blended: an image of the dataset's own test split (not of the target class), chosen by
    index or seeded, whose pixels and provenance are in trigger.json."""
    from ibau.attacks import build_attack, parse_attack
    from ibau.attacks.io import load_trigger, save_trigger
    from ibau.data import load_dataset

    _, test = load_dataset("digits")
    opts = {"pattern": "test_image", "alpha": 0.2}
    trig = build_attack(parse_attack("blend", target=0, options=opts), test_set=test)
    assert trig.label != 0 and trig.label == int(test.labels[trig.index]) and trig.seed == 0
    assert torch.allclose(trig.pattern(test.shape), test.images[trig.index], atol=1e-4)
    x = test.images[:4]
    assert torch.allclose(trig.apply(x), 0.8 * x + 0.2 * trig.pattern(test.shape), atol=1e-6)
    again = build_attack(parse_attack("blend", target=0, options=opts), test_set=test)
    assert again.index == trig.index  # seeded
    other = build_attack(parse_attack("blend", target=0, options=opts), test_set=test, seed=1)
    assert other.index != trig.index and other.seed == 1
    own = build_attack(parse_attack("blend", target=0, options={**opts, "seed": 1}), test_set=test)  # --trigger-option seed=1
    assert own.index == other.index and own.seed == 1
    spec = trig.spec()
    assert {k: spec[k] for k in ("name", "alpha", "pattern", "index", "label", "seed", "target")} == {
        "name": "blend", "alpha": 0.2, "pattern": "test_image", "index": trig.index, "label": trig.label, "seed": 0,
        "target": 0}
    save_trigger(trig, test.shape, tmp_path)
    loaded = load_trigger(tmp_path)  # trigger.json alone rebuilds it, no dataset needed
    assert torch.equal(loaded.apply(x), trig.apply(x)) and loaded.spec() == spec
    assert "test image" in repr(trig) and len(repr(trig)) < 200  # the pixels are not printed
    chosen = Blend.generate(test_set=(test.images, test.labels), pattern="test_image", index=5, target=1)
    assert chosen.index == 5 and chosen.label == int(test.labels[5])


def test_blend_test_image_errors_and_old_specs_unchanged():
    from ibau.attacks import build_attack, parse_attack
    from ibau.attacks.io import parse_trigger

    images, labels = torch.rand(3, 3, 8, 8), torch.tensor([0, 0, 2])
    with pytest.raises(ValueError, match="test split.*none was given"):
        build_attack(parse_attack("blend", options={"pattern": "test_image"}))
    with pytest.raises(ValueError, match="target class 0; pick an image of another class"):
        Blend.generate(test_set=(images, labels), pattern="test_image", index=1, target=0)
    with pytest.raises(ValueError, match="outside the test split's 3 images"):
        Blend.generate(test_set=(images, labels), pattern="test_image", index=3, target=0)
    with pytest.raises(ValueError, match="no image outside the target class"):
        Blend.generate(test_set=(images[:2], labels[:2]), pattern="test_image", target=0)
    assert Blend.generate(test_set=(images, labels), pattern="test_image", target=0).index == 2
    with pytest.raises(ValueError, match="has no image yet"):
        parse_trigger("blend,pattern=test_image")
    with pytest.raises(ValueError, match="pattern must be one of noise, image, test_image"):
        Blend(pattern="cartoon")
    with pytest.raises(ValueError, match="use them with pattern='test_image'"):
        Blend(index=3)
    with pytest.raises(ValueError, match="give index= .* and label="):
        Blend(pattern="test_image", image=images[2])
    assert Blend(seed=3, target=0).spec() == {"name": "blend", "alpha": 0.2, "image": None, "seed": 3, "target": 0}
