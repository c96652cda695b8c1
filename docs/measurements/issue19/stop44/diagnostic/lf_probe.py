"""Diagnostic (issue 19 part 3, stop 44): does a δ search restricted to low spatial frequencies find the Smooth
trigger of CIFAR-10 multi7 where the pixel-space searches do not? Before defense and after 2 rounds of b2csgr2n100c."""
# Run from the repository root: python docs/measurements/issue19/stop44/diagnostic/lf_probe.py (writes runs/lf/, the
# model after 2 rounds, which lf_targeted.py reads); their output of stop 44 is beside them (*.log).
import json, sys, time
from pathlib import Path
import torch
from ibau import IBAUConfig, unlearn
from ibau.data import defender_split, load_npz
from ibau.models import load_model, save_model
from ibau.attacks.io import load_trigger
from ibau.metrics import evaluate
from ibau.unlearn.core import fooling_rates, predictions
from ibau.training import iterate_batches

torch.set_num_threads(1)
M = "docs/measurements/issue17/cifar/models/train-multi7-r0.2-s0-c2d1f1cf"
out = Path("runs/lf"); out.mkdir(exist_ok=True)
model, card = load_model(f"{M}/model.safetensors")
_, test = load_npz("../shared/data/cifar10.npz", train_limit=1)
clean, held = defender_split(test, 5000, seed=0)
trigger = load_trigger(f"{M}/trigger.json")


def lowpass(d, cutoff):
    c, h, w = d.shape
    fy = torch.fft.fftfreq(h, d=1.0 / h).abs().view(-1, 1)
    fx = torch.fft.rfftfreq(w, d=1.0 / w).view(1, -1)
    keep = ((fy ** 2 + fx ** 2).sqrt() <= cutoff).to(d.dtype)
    return torch.fft.irfft2(torch.fft.rfft2(d) * keep, s=(h, w))


def search(net, x, bound, cutoff, seed, lr=10.0):
    net.eval()
    labels = predictions(net, x)
    gen = torch.Generator().manual_seed(seed)
    delta = torch.zeros(x.shape[1:], requires_grad=True)
    for xb, yb in iterate_batches(x, labels, 100, gen, shuffle=True):
        loss = torch.nn.functional.cross_entropy(net(xb + delta), yb) - 1e-3 * delta.pow(2).sum()
        (g,) = torch.autograd.grad(loss, delta)
        with torch.no_grad():
            delta += lr * g
            if cutoff is not None:
                delta.copy_(lowpass(delta, cutoff))
            n = delta.norm()
            if n > bound:
                delta.mul_(bound / n)
    fool = fooling_rates(net, x[:1000], delta.detach(), False, 10)
    return delta.detach(), fool


def report(tag, net):
    m = evaluate(net, held.images, held.labels, trigger, 10)
    print(f"== {tag}: ACC {100*m['acc']:.1f} smooth ASR {100*m['asr:smooth']:.1f} mean ASR {100*m['asr']:.1f}", flush=True)
    for bound in (5, 10):
        for cutoff in (None, 2, 3, 4, 6):
            t = time.perf_counter()
            d, fool = search(net, clean.images, bound, cutoff, 0)
            top = sorted(range(10), key=lambda c: -fool[c])[:3]
            print(f"  bound {bound:>3} cutoff {str(cutoff):>4}: ‖δ‖ {float(d.norm()):.2f} top " +
                  " ".join(f"{c}:{100*fool[c]:.1f}" for c in top) + f"  (class 1: {100*fool[1]:.1f}) {time.perf_counter()-t:.0f}s",
                  flush=True)


report("before", model)
path = out / "multi7_b2n100c_r2.safetensors"
if path.exists():
    net = load_model(path)[0]
else:
    cfg = IBAUConfig.preset("default", rounds=2, batch_size=100, norm="l2", norm_bound=100, bounded_search=10,
                            per_delta_optimizer=True, inner_restarts=2, seed=0)
    res = unlearn(model, clean, cfg, progress=False)
    net = res.model
    save_model(net, path, card)
report("after 2 rounds b2csgr2n100 (no guard)", net)
