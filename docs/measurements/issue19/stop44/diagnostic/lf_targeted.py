"""Diagnostic (stop 44): targeted low-frequency δ per class on the multi7 model after 2 rounds of b2csgr2n100:
is the Smooth target (class 1) anomalously easy to reach with a smooth δ?"""
import time
import torch
from ibau.data import defender_split, load_npz
from ibau.models import load_model
from ibau.attacks.io import load_trigger
from ibau.unlearn.core import fooling_rates
from ibau.training import iterate_batches

torch.set_num_threads(1)
M = "docs/measurements/issue17/cifar/models/train-multi7-r0.2-s0-c2d1f1cf"
_, test = load_npz("../shared/data/cifar10.npz", train_limit=1)
clean, held = defender_split(test, 5000, seed=0)
trig = load_trigger(f"{M}/trigger.json")
smooth = [t for t in trig.parts if t.name == "smooth"][0].perturbation((3, 32, 32))
print("smooth trigger: l2", float(smooth.norm()), "linf", float(smooth.abs().max()))


def lowpass(d, cutoff):
    c, h, w = d.shape
    fy = torch.fft.fftfreq(h, d=1.0 / h).abs().view(-1, 1)
    fx = torch.fft.rfftfreq(w, d=1.0 / w).view(1, -1)
    keep = ((fy ** 2 + fx ** 2).sqrt() <= cutoff).to(d.dtype)
    return torch.fft.irfft2(torch.fft.rfft2(d) * keep, s=(h, w))


def targeted(net, x, target, bound, cutoff, lr=10.0):
    gen = torch.Generator().manual_seed(0)
    y = torch.full((len(x),), target)
    delta = torch.zeros(x.shape[1:], requires_grad=True)
    for xb, yb in iterate_batches(x, y, 100, gen, shuffle=True):
        (g,) = torch.autograd.grad(torch.nn.functional.cross_entropy(net(xb + delta), yb), delta)
        with torch.no_grad():
            delta -= lr * g
            if cutoff:
                delta.copy_(lowpass(delta, cutoff))
            n = delta.norm()
            if n > bound:
                delta.mul_(bound / n)
    return delta.detach()


for tag, path in (("after2", "runs/lf/multi7_b2n100c_r2.safetensors"), ("before", f"{M}/model.safetensors")):
    net = load_model(path)[0].eval()
    with torch.no_grad():
        sm = fooling_rates(net, clean.images[:1000], smooth, False, 10)
    print(f"== {tag}: the true smooth trigger sends {100*sm[1]:.1f}% to class 1", flush=True)
    for bound, cutoff in ((3, 3), (3, None)):
        row = []
        for c in range(10):
            d = targeted(net, clean.images, c, bound, cutoff)
            row.append(fooling_rates(net, clean.images[:1000], d, False, 10)[c])
        print(f"  bound {bound} cutoff {cutoff}: " + " ".join(f"{c}:{100*r:.1f}" for c, r in enumerate(row)), flush=True)
