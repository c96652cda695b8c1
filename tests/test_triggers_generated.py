"""The generated triggers keep their budgets and shapes, and the optimisation really optimises."""
import json

import pytest
import torch
from torch import nn

from ibau.attacks import (
    BadNets,
    Blend,
    L0Invisible,
    L2Invisible,
    MultiTrigger,
    Smooth,
    TrojanSquare,
    TrojanWatermark,
    build_attack,
    make_trigger,
    parse_attack,
    poison,
)
from ibau.attacks.excite import excite, last_conv, select_neurons
from ibau.attacks.io import load_trigger, save_trigger
from ibau.metrics import evaluate


def reference():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(3, 6, 3, padding=1), nn.ELU(), nn.MaxPool2d(4), nn.Conv2d(6, 8, 3, padding=1),
                          nn.ELU(), nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(8, 10))
    return model, torch.rand(32, 3, 32, 32, generator=torch.Generator().manual_seed(1))


def excitation(model, x):
    """Mean activation of the neurons the generators excite."""
    out = []
    h = last_conv(model).register_forward_hook(lambda m, i, o: out.append(o))
    with torch.no_grad():
        model(x)
    h.remove()
    return float(out[0][:, select_neurons(model, 2)].mean())


def test_neuron_selection_follows_incoming_weights():
    model, _ = reference()
    with torch.no_grad():
        last_conv(model).weight[5] = 3.0
        last_conv(model).weight[1] = 2.0
    assert select_neurons(model, 2) == [1, 5]
    with pytest.raises(ValueError, match="neurons"):
        select_neurons(model, 9)


def test_excite_raises_the_objective_and_keeps_the_model():
    model, images = reference()
    before_state = {k: v.clone() for k, v in model.state_dict().items()}
    start = torch.zeros(3, 32, 32)
    stamp = lambda x, d: (x + d).clamp(0, 1)
    delta = excite(model, images, start, stamp, lambda d: d.clamp(-0.2, 0.2), steps=30, lr=0.02)
    assert excitation(model, stamp(images, delta)) > excitation(model, images) + 1e-3
    assert float(delta.abs().max()) <= 0.2 + 1e-7
    assert all(torch.equal(v, before_state[k]) for k, v in model.state_dict().items())
    assert all(p.requires_grad for p in model.parameters()) and model.training


def test_l0_budget_and_region():
    model, images = reference()
    trig = L0Invisible.generate(model, images, pixels=5, steps=20)
    support = trig.delta.abs().sum(0) > 0
    assert int(support.sum()) == 5 and int(trig.mask((3, 32, 32))[0].sum()) == 5
    row = L0Invisible.generate(model, images, pixels=8, region="last_row", steps=20)
    support = row.delta.abs().sum(0) > 0
    assert int(support.sum()) == 8 and bool(support[-1].all() | (support[:-1].sum() == 0))
    assert int(support[:-1].sum()) == 0
    with pytest.raises(ValueError, match="region"):
        L0Invisible.generate(model, images, region="corner")


def test_l2_budget_and_peak():
    model, images = reference()
    trig = L2Invisible.generate(model, images, budget=2.0, max_value=0.1, steps=40, lr=0.05)
    assert float(trig.delta.norm()) <= 2.0 + 1e-6 and float(trig.delta.abs().max()) <= 0.1 + 1e-6
    assert float(trig.delta.norm()) > 1.0  # the ascent uses the budget rather than staying at the start
    stamped = trig.apply(images)
    assert float((stamped - images).abs().max()) <= 0.1 + 1e-6


def test_smooth_is_low_frequency():
    trig = Smooth(cutoff=3, amplitude=0.2, seed=4)
    d = trig.perturbation((3, 32, 32)).double()
    assert abs(float(d.abs().max()) - 0.2) < 1e-4 and abs(float(d.mean((1, 2)).abs().max())) < 1e-3
    power = torch.fft.rfft2(d).abs() ** 2
    fy = torch.fft.fftfreq(32, d=1 / 32).abs().view(-1, 1)
    fx = torch.fft.rfftfreq(32, d=1 / 32).view(1, -1)
    high = (fy ** 2 + fx ** 2).sqrt() > 3
    assert float(power[:, high].sum() / power.sum()) < 1e-4  # only rounding noise above the cutoff
    assert not torch.equal(d, Smooth(seed=5).perturbation((3, 32, 32)).double())
    with pytest.raises(ValueError, match="cutoff"):
        Smooth(cutoff=0.5)


@pytest.mark.parametrize("cls,pixels", [(TrojanSquare, 81), (TrojanWatermark, 320)])
def test_trojan_shapes_and_stamping(cls, pixels):
    model, images = reference()
    trig = cls.generate(model, images, steps=20)
    footprint = trig.mask((3, 32, 32))[0] > 0
    assert int(footprint.sum()) == pixels
    changed = (trig.apply(images) - images).abs().sum((0, 1)) > 0
    assert not bool(changed[~footprint].any())
    assert excitation(model, trig.apply(images)) > excitation(model, cls(pattern=torch.full((3, 32, 32), 0.5)).apply(images))


def test_trojan_pattern_must_be_pixels_and_fit():
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        TrojanSquare(pattern=torch.full((3, 32, 32), 2.0))
    with pytest.raises(ValueError, match="does not fit"):
        TrojanSquare(pattern=torch.zeros(3, 8, 8))
    trig = TrojanSquare(pattern=torch.zeros(3, 32, 32))
    with pytest.raises(ValueError, match="generated for"):
        trig.apply(torch.zeros(1, 3, 16, 16))


def test_parse_attack_forms():
    assert parse_attack("blend") == [("blend", {})]
    assert parse_attack("badnets", target=3) == [("badnets", {"target": 3})]
    assert parse_attack("badnets", all_to_all=True) == [("badnets", {"all_to_all": True})]
    assert parse_attack("badnets:0, blend:3") == [("badnets", {"target": 0}), ("blend", {"target": 3})]
    seven = dict((n, kw["target"]) for n, kw in parse_attack("multi7"))
    assert seven == {"trojan_wm": 9, "trojan_sq": 2, "badnets": 0, "smooth": 1, "blend": 3, "l0_inv": 4, "l2_inv": 5}
    for bad, msg in [("nope", "unknown attack"), ("badnets:x", "name:target"), ("badnets:1,nope:2", "unknown attack")]:
        with pytest.raises(ValueError, match=msg):
            parse_attack(bad)
    with pytest.raises(ValueError, match="each target"):
        parse_attack("badnets:0,blend:3", target=1)


def test_multi_trigger_poisons_disjointly_and_reports_each():
    g = torch.Generator().manual_seed(0)
    x, y = torch.rand(200, 3, 32, 32, generator=g), torch.arange(200) % 10
    multi = build_attack(parse_attack("badnets:0,blend:3,smooth:1"))
    assert isinstance(multi, MultiTrigger)
    p = poison(x, y, multi, ratio=0.3, num_classes=10, seed=1)
    assert len(p.indices) == 60 and len(set(p.indices.tolist())) == 60
    for k, part in enumerate(multi.components()):
        rows = p.indices[p.component == k]
        assert len(rows) == 20 and bool((y[rows] != part.target).all())
        assert bool((p.labels[rows] == part.target).all())
        assert torch.equal(p.images[rows], part.apply(x[rows]))
    untouched = torch.ones(200, dtype=torch.bool)
    untouched[p.indices] = False
    assert torch.equal(p.images[untouched], x[untouched]) and torch.equal(p.labels[untouched], y[untouched])

    class Oracle(nn.Module):  # classifies badnets-stamped images as 0, everything else as 5
        def __init__(self):
            super().__init__()
            self.p = nn.Parameter(torch.zeros(1))

        def forward(self, inp):
            stamped = (inp[:, :, 27:31, 27:31] == 1).flatten(1).all(1)
            return torch.nn.functional.one_hot(torch.where(stamped, 0, 5), 10).float()

    m = evaluate(Oracle(), x[:20], y[:20], multi, 10)
    assert m["asr:badnets"] == 1.0 and m["asr:blend"] == 0.0 and m["asr:smooth"] == 0.0
    assert abs(m["asr"] - 1 / 3) < 1e-6 and abs(m["acc"] - 0.1) < 1e-6
    assert abs(m["ra:blend"] - 2 / 18) < 1e-6 and abs(m["ra"] - (0 + 2 / 18 + 2 / 18) / 3) < 1e-6
    rebuilt = make_trigger(**json.loads(json.dumps(multi.spec())))
    assert torch.equal(rebuilt.apply(x[:4]), multi.apply(x[:4]))
    with pytest.raises(ValueError, match="at least two"):
        MultiTrigger([BadNets()])


def test_multi_needs_room():
    y = torch.zeros(10, dtype=torch.long)
    with pytest.raises(ValueError, match="lower the ratio"):
        poison(torch.rand(10, 3, 32, 32), y, MultiTrigger([BadNets(target=0), Blend(target=0)]), 0.5, 2)


def test_trigger_files_round_trip(tmp_path):
    model, images = reference()
    trig = MultiTrigger([TrojanWatermark.generate(model, images, steps=3, target=9),
                         L2Invisible.generate(model, images, steps=3, target=5)])
    paths = save_trigger(trig, (3, 32, 32), tmp_path)
    assert {p.name for p in paths} == {"trigger.json", "trigger.png", "trigger_0_trojan_wm.png", "trigger_1_l2_inv.png"}
    again = load_trigger(tmp_path)
    assert torch.equal(again.apply(images), trig.apply(images))
    (tmp_path / "bad.json").write_text("[1, 2]")
    with pytest.raises(ValueError, match="trigger spec"):
        load_trigger(tmp_path / "bad.json")
    with pytest.raises(ValueError, match="no trigger file"):
        load_trigger(tmp_path / "missing.json")


def test_trigger_options():
    from ibau.attacks import parse_options

    opts = parse_options(["alpha=0.1", "image=cat.png", "size=3", "flag=true", "x=none"])
    assert opts == {"alpha": 0.1, "image": "cat.png", "size": 3, "flag": True, "x": None}
    with pytest.raises(ValueError, match="KEY=VALUE"):
        parse_options(["alpha"])
    trig = build_attack(parse_attack("badnets", target=1, options={"size": 3}))
    assert trig.size == 3 and trig.target == 1
    with pytest.raises(ValueError, match="no option colour; its options are: .*size"):
        build_attack(parse_attack("badnets", options={"colour": 1}))
    with pytest.raises(ValueError, match="one trigger"):
        parse_attack("multi7", options={"size": 3})
    model, images = reference()
    l0 = build_attack(parse_attack("l0_inv", options={"pixels": 3, "region": "last_row"}), model, images, steps=4)
    assert int((l0.delta.abs().sum(0) > 0).sum()) == 3
