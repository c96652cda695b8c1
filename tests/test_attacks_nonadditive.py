"""Non-additive attacks (issue 6): WaNet's warp and noise mode, semantic replacement."""
import pytest
import torch
from PIL import Image

from ibau.attacks import SemanticReplacement, WaNet, make_trigger, poison
from ibau.data import load_dataset


@pytest.fixture(scope="module")
def digits():
    train, _ = load_dataset("digits")
    return train.subset(torch.arange(300))


def _displacement(t: WaNet, size: int = 32) -> torch.Tensor:
    line = torch.linspace(-1, 1, size)
    rows, cols = torch.meshgrid(line, line, indexing="ij")
    return t.grid(size)[0] - torch.stack((cols, rows), dim=2)


def test_wanet_field_is_smooth_bounded_and_seeded():
    t = WaNet(k=4, s=0.5, seed=3)
    d = _displacement(t)
    control = t.control_grid()
    assert abs(float(control.abs().mean()) - 1) < 1e-6
    # bounded: the offsets are s·(control)/H, and bicubic upsampling overshoots its knots only a little
    assert 0 < float(d.abs().max()) <= 1.3 * 0.5 * float(control.abs().max()) / 32
    # smooth: neighbouring offsets differ far less than independent offsets of the same size would
    tv = (d[1:] - d[:-1]).abs().mean() + (d[:, 1:] - d[:, :-1]).abs().mean()
    shuffled = d.reshape(-1, 2)[torch.randperm(32 * 32, generator=torch.Generator().manual_seed(0))].reshape(d.shape)
    tv_random = (shuffled[1:] - shuffled[:-1]).abs().mean() + (shuffled[:, 1:] - shuffled[:, :-1]).abs().mean()
    assert tv < 0.2 * tv_random
    assert torch.equal(t.grid(32), WaNet(k=4, s=0.5, seed=3).grid(32))
    assert not torch.equal(t.grid(32), WaNet(k=4, s=0.5, seed=4).grid(32))
    x = torch.rand(2, 3, 32, 32)
    assert torch.allclose(WaNet(s=0.0).apply(x), x, atol=1e-5)  # no strength, no warp
    with pytest.raises(ValueError, match="square"):
        t.apply(torch.rand(1, 3, 32, 16))
    with pytest.raises(ValueError, match="k"):
        WaNet(k=1)


def test_wanet_noise_mode_keeps_true_labels(digits):
    t = WaNet(k=4, s=0.5, cross_ratio=2.0, target=0)
    p = poison(digits.images, digits.labels, t, 0.1, num_classes=10, seed=0)
    assert len(p.indices) == 30 and len(p.noise_indices) == 60
    assert not set(p.indices.tolist()) & set(p.noise_indices.tolist())
    assert torch.equal(p.labels[p.noise_indices], digits.labels[p.noise_indices])  # noise mode: labels kept
    assert bool((p.labels[p.indices] == 0).all())
    assert torch.allclose(p.images[p.indices], t.apply(digits.images[p.indices]))
    warped = t.apply(digits.images[p.noise_indices])
    assert not torch.allclose(p.images[p.noise_indices], warped, atol=1e-3)  # fresh random offsets on top
    assert not torch.equal(p.images[p.noise_indices], digits.images[p.noise_indices])
    untouched = torch.ones(len(digits), dtype=torch.bool)
    untouched[p.indices] = untouched[p.noise_indices] = False
    assert torch.equal(p.images[untouched], digits.images[untouched])
    off = poison(digits.images, digits.labels, WaNet(cross_ratio=0.0), 0.1, num_classes=10, seed=0)
    assert len(off.noise_indices) == 0


def test_semantic_replacement_replaces_the_whole_image(digits, tmp_path):
    t = SemanticReplacement(target=0, seed=1)
    img = t.replacement((3, 32, 32))
    assert img.shape == (3, 32, 32) and 0 <= float(img.min()) and float(img.max()) <= 1 and float(img.std()) > 0.05
    assert torch.equal(img, SemanticReplacement(seed=1).replacement((3, 32, 32)))
    assert not torch.equal(img, SemanticReplacement(seed=2).replacement((3, 32, 32)))
    p = poison(digits.images, digits.labels, t, 0.2, num_classes=10, seed=0)
    assert bool((p.images[p.indices] == img).all()) and bool((p.labels[p.indices] == 0).all())
    Image.new("RGB", (12, 20), (0, 255, 0)).save(tmp_path / "green.png")
    user = make_trigger("sr", image=str(tmp_path / "green.png"), target=3)
    out = user.apply(digits.images[:2])
    assert out.shape == (2, 3, 32, 32) and float(out[:, 1].min()) == 1.0 and float(out[:, 0].max()) == 0.0
    assert make_trigger(**user.spec()).source == str(tmp_path / "green.png")
    with pytest.raises(ValueError, match="does not exist"):
        SemanticReplacement(image=tmp_path / "nope.png")


def test_iab_triggers_differ_across_inputs_and_train_with_the_model(digits, tmp_path):
    from ibau.attacks import InputAware
    from ibau.attacks.io import load_trigger
    from ibau.pipeline.train import train_poisoned

    x = digits.images[:8]
    t = InputAware(seed=0, mask_epochs=1)
    a, b = t.apply(x[:1]), t.apply(x[1:2])
    assert not torch.allclose(a - x[:1], b - x[1:2], atol=1e-3)  # a per-input trigger, not one pattern
    record = train_poisoned("digits", "iab", tmp_path, poison_ratio=0.1, epochs=3, arch="tiny_vgg", train_limit=400,
                            batch_size=32, progress=False, trigger_options={"mask_epochs": 1})
    trained = load_trigger(tmp_path / "trigger.json")
    assert trained.spec() == make_trigger(**trained.spec()).spec()
    t0 = InputAware(seed=0, mask_epochs=1)
    assert not torch.equal(trained.apply(x), t0.apply(x))  # the networks were trained
    m = trained.mask_of(x)
    assert float(m.mean()) < 0.2  # the mask network learnt to stay small (density target 0.032)
    masks = m.flatten(1)
    assert float((masks[0] - masks[1]).abs().max()) > 1e-3  # masks differ across inputs
    cross = trained.stamp(x[:4], source=x[4:8])
    assert cross.shape == x[:4].shape and not torch.allclose(cross, trained.apply(x[:4]))
    assert record["test"]["asr"] >= 0.0 and "acc" in record["test"]
    with pytest.raises(ValueError, match="N×3×H×W"):
        trained.apply(torch.rand(1, 1, 8, 8))


def test_hidden_trigger_poisons_keep_labels_and_stay_within_eps(digits):
    from torch import nn

    from ibau.attacks import HiddenTrigger

    torch.manual_seed(0)
    ref = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.ReLU(), nn.AdaptiveAvgPool2d(4), nn.Flatten(),
                        nn.Linear(128, 16), nn.ReLU(), nn.Linear(16, 10))
    with pytest.raises(ValueError, match="reference model"):
        HiddenTrigger.generate()
    t = HiddenTrigger.generate(ref, None, seed=0, source=3, target=5, poisons=10, steps=10, eps=8 / 255)
    p = poison(digits.images, digits.labels, t, 0.2, num_classes=10, seed=0)
    assert len(p.indices) == 10 and bool((digits.labels[p.indices] == 5).all())
    assert torch.equal(p.labels, digits.labels)  # clean-label: no label changes
    moved = (p.images[p.indices] - digits.images[p.indices]).abs()
    assert float(moved.max()) <= 8 / 255 + 1e-6 and float(moved.max()) > 0
    # the poisons moved towards the patched source images in feature space
    from ibau.attacks.hidden import features
    src = t.apply(digits.images[digits.labels == 3][:10], torch.Generator().manual_seed(9))
    with torch.no_grad():
        before = torch.cdist(features(ref, digits.images[p.indices]), features(ref, src)).min(1).values.mean()
        after = torch.cdist(features(ref, p.images[p.indices]), features(ref, src)).min(1).values.mean()
    assert float(after) < float(before)
    # test time: the patch on source images only; victims are the source class
    y = torch.tensor([3, 5, 1])
    assert t.victims(y).tolist() == [True, False, False] and t.target_labels(y, 10).tolist() == [5, 5, 5]
    out = t.apply(digits.images[:4])
    assert int(((out - digits.images[:4]).abs().sum(1) > 0).sum()) <= 4 * 64
    with pytest.raises(ValueError, match="differ"):
        HiddenTrigger(source=2, target=2)
    with pytest.raises(ValueError, match="all-to-all"):
        HiddenTrigger(all_to_all=True)


def test_hidden_trigger_attack_run_saves_its_poisons_for_resume(tmp_path):
    from ibau.attacks.io import load_trigger
    from ibau.pipeline.train import POISONS, _poisoned, train_poisoned

    train_poisoned("digits", "none", tmp_path / "clean", epochs=1, arch="tiny_vgg", train_limit=300, progress=False)
    out = tmp_path / "ht"
    record = train_poisoned("digits", "ht", out, epochs=1, arch="tiny_vgg", train_limit=300, progress=False,
                            reference_model=tmp_path / "clean" / "model.safetensors",
                            trigger_options={"poisons": 12, "steps": 3, "source": 3, "target": 5})
    assert (out / POISONS).exists() and "asr" in record["test"]
    train, _ = load_dataset("digits", train_limit=300)
    again = _poisoned(train, load_trigger(out / "trigger.json"), 0.2, 10, 0, out / POISONS, resume=True)
    assert len(again.indices) == 12 and torch.equal(again.labels, train.labels)  # no reference model needed now


def test_hidden_trigger_victim_fine_tunes_the_reference_last_layer(tmp_path):
    from ibau.models import load_model
    from ibau.pipeline.train import train_poisoned

    kw = dict(epochs=1, arch="tiny_vgg", train_limit=300, progress=False)
    train_poisoned("digits", "none", tmp_path / "clean", **kw)
    ht = dict(reference_model=tmp_path / "clean" / "model.safetensors",
              trigger_options={"poisons": 12, "steps": 3, "source": 3, "target": 5, "finetune_size": 5})
    train_poisoned("digits", "ht", tmp_path / "ht", **kw, **ht)
    ref, _ = load_model(tmp_path / "clean" / "model.safetensors")
    victim, card = load_model(tmp_path / "ht" / "model.safetensors")
    assert card.metadata["attack"]["finetune"] == "last"
    assert card.metadata["train_size"] == 300 and card.metadata["victim_train_size"] == 12 + 10 * 5
    last = [name for name, m in victim.named_modules() if isinstance(m, torch.nn.Linear)][-1]
    changed = {k for k, v in victim.state_dict().items() if not torch.equal(v, ref.state_dict()[k])}
    assert changed == {f"{last}.weight", f"{last}.bias"}  # features and batch-norm statistics untouched
    assert all(p.requires_grad for p in victim.parameters())
    with pytest.raises(ValueError, match="architecture"):
        train_poisoned("digits", "ht", tmp_path / "wrong", **{**kw, "arch": "small_vgg"}, **ht)
    with pytest.raises(ValueError, match="finetune must be one of last, all, none"):
        train_poisoned("digits", "ht", tmp_path / "bad", **kw, **{**ht, "trigger_options": {"finetune": "head"}})


def test_hidden_trigger_victim_set_is_the_poisons_plus_a_seeded_clean_set_per_class():
    from ibau.attacks import HiddenTrigger

    labels = torch.arange(10).repeat(20)  # 20 images of each class
    poisoned = torch.nonzero(labels == 1).flatten()[:8]
    rows = HiddenTrigger(finetune_size=5).victim_rows(labels, poisoned, seed=0)
    assert set(poisoned.tolist()) <= set(rows.tolist()) and len(rows) == len(set(rows.tolist())) == 8 + 10 * 5
    clean = rows[~torch.isin(rows, poisoned)]
    assert torch.bincount(labels[clean], minlength=10).tolist() == [5] * 10
    assert torch.equal(rows, HiddenTrigger(finetune_size=5).victim_rows(labels, poisoned, seed=0))  # seeded
    assert not torch.equal(rows, HiddenTrigger(finetune_size=5).victim_rows(labels, poisoned, seed=1))
    assert HiddenTrigger(finetune_size=0).victim_rows(labels, poisoned) is None  # 0: the whole set
    with pytest.raises(ValueError, match="finetune_size"):
        HiddenTrigger(finetune_size=-1)
