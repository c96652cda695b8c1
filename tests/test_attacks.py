"""Every registered trigger: stamps in place of nothing, stays in [0, 1], is deterministic, shows its
hyper-parameters; plus checks specific to each family."""
import pytest
import torch
from PIL import Image

from ibau.attacks import ATTACKS, Blend, make_trigger


@pytest.mark.parametrize("name", sorted(ATTACKS))
def test_registry_walk(name):
    trig = make_trigger(name)
    x = torch.rand(4, 3, 32, 32, generator=torch.Generator().manual_seed(0))
    x0 = x.clone()
    out = trig.apply(x)
    assert out.shape == x.shape and torch.equal(x, x0)
    assert float(out.min()) >= 0 and float(out.max()) <= 1
    assert not torch.equal(out, x)
    assert torch.equal(make_trigger(name).apply(x), out)
    assert repr(trig).startswith(type(trig).__name__ + "(") and "target=" in repr(trig)
    assert torch.equal(make_trigger(**trig.spec()).apply(x), out)  # the spec rebuilds the same trigger
    y = torch.tensor([0, 1, 2, 3])
    assert trig.target_labels(y, 10).tolist() == [trig.target] * 4
    a2a = make_trigger(name, all_to_all=True)
    assert a2a.target_labels(y, 4).tolist() == [1, 2, 3, 0] and bool(a2a.victims(y).all())


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
