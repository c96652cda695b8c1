"""Diagnostic (stop 54): the KKT multiplier μ of the ℓ2 sphere against the fixed-point solver's step (0.1), by bound.

GTSRB Fig. 2 (norm_bound, issue 17's Trojan WM model) lost 51 ACC points in round 1 at Cδ = 0.5 on defense seed 1 (outer
loss 61). On the sphere the hypergradient's system is P(A + μI)P with μ = −⟨∇_δ L_in, δ⟩ / Cδ², and the fixed-point
(Richardson) solver converges only while lr·μ < 2; K = 2 gives lr·(2 − lr·M)·b, whose sign flips beyond it. This
measures μ at a δ found by 50 projected ascent steps on 100 clean images of seed 1's split (hyper batch: the
first 20, true labels), for the bounds of the suite.

    python docs/measurements/issue19/stop54/diagnostic/kkt_multiplier.py > docs/measurements/issue19/stop54/kkt_multiplier.txt
"""
import torch
import torch.nn.functional as F

from ibau.data import defender_split, load_npz
from ibau.models import load_model

torch.set_num_threads(1)
_, test = load_npz("../shared/data/gtsrb.npz", train_limit=1)
clean, _ = defender_split(test, 5000, seed=1)
net = load_model("docs/measurements/issue17/gtsrb/models/train-trojan_wm-r0.2-s0-418b8954/model.safetensors")[0].eval()
x, y = clean.images[:100], clean.labels[:100]
with torch.no_grad():
    pl = net(x).argmax(1)
for bound in (0.5, 5.0, 10.0, 20.0):
    d = torch.zeros_like(x[0], requires_grad=True)
    for _ in range(50):  # ascent on CE (pseudo-labels), projected to the ℓ2 ball
        g, = torch.autograd.grad(F.cross_entropy(net(x + d), pl), d)
        with torch.no_grad():
            d += 10 * g
            d.mul_(min(1.0, bound / float(d.norm())))
    d = d.detach().requires_grad_(True)
    lin = -F.cross_entropy(net(x[:20] + d), y[:20])  # L_in = -H on the hyper batch, true labels
    g, = torch.autograd.grad(lin, d)
    mu = -float((g * d.detach()).sum()) / bound ** 2
    print(f"bound {bound}: |d| {float(d.detach().norm()):.3f} |grad L_in| {float(g.norm()):.3f} mu {mu:.2f} lr*mu {0.1*mu:.2f}")
