"""ANP (Wu and Wang, NeurIPS 2021): adversarial neuron perturbation finds the neurons a backdoor lives in, mask
learning drives their masks to 0, pruning by threshold or fraction removes them.

The mechanism is shown on a hand-built network with one planted backdoor neuron (fast, exact); the plumbing on
the session's digits model (a few iterations: the paper's 2000 take ~30 min on one CPU thread)."""
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from conftest import one_line, same_state, snapshot
from ibau.data import ImageSet
from ibau.defenses import defense_class, make_defense
from ibau.defenses.anp import ANP, ANPConfig, neuron_layers, perturbed_forward, pruned_neurons

pytestmark = pytest.mark.usefixtures("one_thread")

BACKDOOR = 3  # the planted neuron's channel


def planted() -> nn.Module:
    """Three colour neurons (channel c passes colour c, class c reads it) and one backdoor neuron: it sums the
    colours, and its BatchNorm shift −1.5 keeps it silent on clean pixels (≈1.2) but lets a white pixel (3.0)
    through, and class 0 reads it with weight 100. Clean images are classified by colour; a white 2×2 corner
    sends them to class 0."""
    net = nn.Sequential(nn.Conv2d(3, 4, 1), nn.BatchNorm2d(4), nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten(),
                        nn.Linear(4, 3))
    with torch.no_grad():
        net[0].weight.zero_()
        net[0].bias.zero_()
        for c in range(3):
            net[0].weight[c, c] = 1.0
        net[0].weight[BACKDOOR] = 1.0
        net[1].bias.copy_(torch.tensor([0.0, 0.0, 0.0, -1.5]))
        net[5].weight.zero_()
        net[5].bias.zero_()
        for c in range(3):
            net[5].weight[c, c] = 5.0
        net[5].weight[0, BACKDOOR] = 100.0
    return net.eval()


def colour_task(n: int = 120, seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    y = torch.randint(0, 3, (n,), generator=g)
    x = torch.rand(n, 3, 6, 6, generator=g) * 0.1 + 0.05
    x[torch.arange(n), y] += 0.8
    return x, y


def stamp(x: torch.Tensor) -> torch.Tensor:
    x = x.clone()
    x[:, :, :2, :2] = 1.0
    return x


def acc_asr(model, x, y):
    with torch.no_grad():
        acc = float((model(x).argmax(1) == y).float().mean())
        asr = float((model(stamp(x)).argmax(1)[y != 0] == 0).float().mean())
    return acc, asr


# --- the mechanism on a planted backdoor neuron -------------------------------------------------------------
def test_the_planted_neuron_is_the_one_whose_perturbation_raises_the_clean_loss_most():
    net, (x, y) = planted(), colour_task()
    layers = neuron_layers(net)
    assert [n for n, _ in layers] == ["1"]
    ones = torch.ones(4)
    with torch.no_grad():
        base = F.cross_entropy(perturbed_forward(net, layers, x, ones), y)
        assert torch.equal(perturbed_forward(net, layers, x, ones), net(x))  # no perturbation: the model itself
        worst = []
        for k in range(4):  # each neuron alone, at the four corners of the ε = 0.4 box of (δ_k, ξ_k)
            losses = []
            for d in (-0.4, 0.4):
                for s in (-0.4, 0.4):
                    dw, db = torch.zeros(4), torch.zeros(4)
                    dw[k], db[k] = d, s
                    losses.append(F.cross_entropy(perturbed_forward(net, layers, x, ones, dw, db), y))
            worst.append(float(max(losses)))
    assert max(range(4), key=worst.__getitem__) == BACKDOOR
    assert worst[BACKDOOR] > 10 * float(base) and worst[BACKDOOR] > 5 * max(w for k, w in enumerate(worst) if k != BACKDOOR)


def test_anp_masks_the_planted_neuron_to_zero_first_and_pruning_it_removes_the_backdoor():
    net, (x, y) = planted(), colour_task()
    assert acc_asr(net, x, y) == (1.0, 1.0)
    trace = []

    def monitor(model, seconds):  # the model pruned with the masks of the moment, after every iteration
        trace.append(model[1].weight.detach().clone())
        return dict(zip(("acc", "asr"), acc_asr(model, x, y)))

    cfg = ANPConfig(iterations=20, batch_size=32, checkpoint_every=1, batch_stats=False, device="cpu")
    result = ANP(cfg).run(net, ImageSet(x, y), callback=monitor, progress=False)
    masks = result.extra["masks"]["1"]
    assert masks[BACKDOOR] == 0.0 and min(m for k, m in enumerate(masks) if k != BACKDOOR) > 0.9
    assert result.extra["pruned"] == [["1", BACKDOOR, 0.0]] and result.extra["pruned_count"] == 1
    # the first neuron whose γ the pruning zeroes is the planted one, and no other follows it
    first = next(i for i, w in enumerate(trace) if (w == 0).any())
    assert torch.nonzero(trace[first] == 0).flatten().tolist() == [BACKDOOR]
    assert all(torch.nonzero(w == 0).flatten().tolist() in ([], [BACKDOOR]) for w in trace)
    assert result.history[first]["asr"] == 0.0 and all(h["acc"] == 1.0 for h in result.history)
    # pruning zeroes the scale γ only (the channel outputs its shift β, as the authors' pruning), nothing else
    assert result.model[1].weight[BACKDOOR] == 0 and result.model[1].bias[BACKDOOR] == -1.5
    changed = {k for k, v in result.model.state_dict().items() if not torch.equal(v, net.state_dict()[k])}
    assert changed == {"1.weight"}
    assert acc_asr(result.model, x, y) == (1.0, 0.0)
    assert result.time_to_effect is None  # a plain function is not an EffectMonitor
    assert [h["step"] for h in result.history] == [f"iteration {i}" for i in range(1, 20)] + ["pruned"]


def test_without_the_perturbation_no_mask_moves_and_the_backdoor_stays():
    """ε = 0 (the clean loss alone): the backdoor neuron is silent on clean images, so nothing drives its mask."""
    net, (x, y) = planted(), colour_task()
    result = ANP(eps=0.0, iterations=20, batch_size=32, batch_stats=False, device="cpu").run(net, ImageSet(x, y), progress=False)
    assert result.extra["masks"]["1"] == [1.0, 1.0, 1.0, 1.0] and result.extra["pruned"] == []
    assert acc_asr(result.model, x, y) == (1.0, 1.0)


def test_projection_and_pruning_by_fraction():
    net, (x, y) = planted(), colour_task()
    result = ANP(project=True, prune_by="fraction", fraction=0.25, iterations=10, batch_size=32, batch_stats=False,
                 device="cpu").run(net, ImageSet(x, y), progress=False)
    assert [p[:2] for p in result.extra["pruned"]] == [["1", BACKDOOR]]  # ⌈0.25 · 4⌉ = 1, the smallest mask
    mask = torch.tensor([0.9, 0.1, 0.5, 0.2, 0.2])
    assert pruned_neurons(mask, "threshold", 0.2, 0.05).tolist() == [1, 3, 4]  # <= threshold, smallest first
    assert pruned_neurons(mask, "fraction", 0.2, 0.3).tolist() == [1, 3]  # ⌈0.3 · 5⌉ = 2


# --- on the digits model ------------------------------------------------------------------------------------
def test_anp_on_the_digits_model_prunes_bn_scales_only(digits_backdoor):
    d = digits_backdoor
    model, state = d["model"], snapshot(d["model"])
    result = make_defense("anp", iterations=4, batch_size=32, checkpoint_every=2, prune_by="fraction", fraction=0.02,
                          device="cpu").run(model, d["clean"], progress=False)
    assert same_state(model, state)  # the caller's model is untouched
    assert [h["step"] for h in result.history] == ["iteration 2", "pruned"]
    extra = result.extra
    assert extra["layers"] == ["2", "5", "10", "13", "18", "21"] and extra["neurons"] == 448
    assert extra["pruned_count"] == len(extra["pruned"]) == 9  # ⌈0.02 · 448⌉
    after = result.model.state_dict()
    assert list(after) == list(state)
    for name, channel, _ in extra["pruned"]:
        assert after[f"{name}.weight"][channel] == 0
    zeroed = sum(int((after[f"{n}.weight"] == 0).sum()) for n in extra["layers"])
    assert zeroed == 9
    assert all(torch.equal(after[k], v) for k, v in state.items() if not (k.endswith(".weight") and k[:-7] in extra["layers"]))
    assert all(0 <= m <= 1 for vals in extra["masks"].values() for m in vals)


# --- errors and configuration --------------------------------------------------------------------------------
def test_a_model_without_normalisation_layers_is_refused_in_one_line(tiny_task):
    _, x, y = tiny_task
    plain = nn.Sequential(nn.Conv2d(3, 4, 3, padding=1), nn.ReLU(), nn.Flatten(), nn.Linear(4 * 8 * 8, 4))
    with pytest.raises(ValueError, match="anp needs affine BatchNorm") as info:
        ANP(iterations=1, device="cpu").run(plain, ImageSet(x, y), progress=False)
    one_line(str(info.value))


def test_groupnorm_channels_are_neurons_too(tiny_task):
    _, x, y = tiny_task
    net = nn.Sequential(nn.Conv2d(3, 4, 3, padding=1), nn.GroupNorm(2, 4), nn.ReLU(), nn.Flatten(), nn.Linear(4 * 8 * 8, 4))
    result = ANP(iterations=2, batch_size=8, prune_by="fraction", fraction=0.25, device="cpu").run(net, ImageSet(x, y),
                                                                                                   progress=False)
    assert result.extra["layers"] == ["1"] and result.extra["pruned_count"] == 1


def test_registered_and_reproducible():
    assert defense_class("anp") is ANP and make_defense("anp").name == "anp"
    assert repr(ANP()).startswith("ANP(seed=0, device=None, eps=0.4, steps=1, project=False, alpha=0.2, iterations=2000")
    net, (x, y) = planted(), colour_task()
    runs = [ANP(iterations=3, batch_size=16, seed=5, device="cpu").run(net, ImageSet(x, y), progress=False) for _ in range(2)]
    assert runs[0].extra["masks"] == runs[1].extra["masks"]


@pytest.mark.parametrize("kwargs, word", [
    ({"eps": -0.1}, "eps must be >= 0"), ({"steps": 0}, "steps must be >= 1"), ({"alpha": 1.5}, "alpha must be in"),
    ({"iterations": 0}, "iterations"), ({"batch_size": 0}, "batch_size"), ({"lr": 0}, "lr must be > 0"),
    ({"momentum": 1.0}, "momentum"), ({"prune_by": "number"}, "prune_by must be one of search, threshold, fraction"),
    ({"threshold": 1.2}, "threshold"), ({"fraction": 0.0}, "fraction"), ({"fraction": 1.0}, "fraction"),
    ({"checkpoint_every": 0}, "checkpoint_every"), ({"project": 1}, "project must be true or false"),
    ({"batch_stats": "yes"}, "batch_stats must be true or false"), ({"acc_ratio": 0.0}, "acc_ratio must be in"),
    ({"acc_ratio": 1.0}, "acc_ratio"), ({"threshold_step": 0}, "threshold_step"), ({"max_threshold": 1.5}, "max_threshold"),
])
def test_config_validation_names_the_problem_and_the_fix(kwargs, word):
    with pytest.raises(ValueError, match=f"^ANPConfig: {word}") as info:
        ANPConfig(**kwargs)
    one_line(str(info.value))


# --- the threshold search (the defender's clean set only) -----------------------------------------------------
def test_the_search_prunes_the_most_the_clean_set_tolerates_and_stops_where_its_accuracy_falls():
    """Masks planted by hand: the backdoor neuron at 0.1 and a colour neuron at 0.6, whose pruning costs a third
    of the clean accuracy. The search prunes the backdoor (at 0.1 and on), stops at 0.6 and keeps 0.55."""
    from ibau.defenses.anp import search_threshold

    net, (x, y) = planted(), colour_task()
    layers = neuron_layers(net)
    before = net[1].weight.detach().clone()
    mask = torch.tensor([1.0, 0.6, 1.0, 0.1])
    chosen, search = search_threshold(net, layers, mask, ImageSet(x, y), 0.9, 0.05, 0.1)
    assert chosen == 0.55 and search["clean_acc"] == 1.0
    sweep = search["sweep"]
    assert [s["threshold"] for s in sweep] == [round(0.05 * k, 10) for k in range(13)]  # stops at 0.6
    assert [s["pruned"] for s in sweep] == [0, 0] + [1] * 10 + [2]
    assert sweep[-1]["clean_acc"] < 0.9 and all(s["clean_acc"] == 1.0 for s in sweep[:-1])
    assert torch.equal(net[1].weight, before)  # the search leaves the weights as they were
    # a tolerance the first pruning already breaks: nothing is chosen (mask 0 prunes the colour neuron)
    assert search_threshold(net, layers, torch.tensor([1.0, 0.0, 1.0, 0.1]), ImageSet(x, y), 0.9, 0.05, 0.1)[0] is None


def test_anp_by_search_removes_the_planted_backdoor_and_records_its_sweep():
    net, (x, y) = planted(), colour_task()
    result = ANP(iterations=20, batch_size=32, checkpoint_every=10, batch_stats=False, device="cpu").run(
        net, ImageSet(x, y), progress=False)
    search = result.extra["search"]
    assert ANPConfig().prune_by == "search" and search["threshold"] == 0.9  # masks: 0 and > 0.9
    assert [p[:2] for p in result.extra["pruned"]] == [["1", BACKDOOR]]
    assert acc_asr(result.model, x, y) == (1.0, 0.0)
    assert [h["step"] for h in result.history] == ["iteration 10", "pruned"]
