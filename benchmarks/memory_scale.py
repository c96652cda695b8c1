"""Peak memory and seconds per θ step of ``unlearn`` at ImageNet scale (issue 20 §4).

ResNet-50 at 224×224 (torchvision, random weights, 1,000 classes), a synthetic clean set (uniform pixels,
random labels: the cost of a step does not depend on what the images show), a small batch. Every setting
runs in a fresh process of its own, so one setting's allocator cache never hides another's peak; each
reports the peak resident memory of its process (CPU) or the peak allocated CUDA memory, per round, and the
seconds of one θ step (the round minus its δ search, over the θ steps).

What it shows: the peak does not grow with the number of δ steps (the hypergradient never stores the inner
optimisation path) nor with the number of rounds (nothing accumulates between rounds).

    python benchmarks/memory_scale.py                      # CPU, batch 4: 3 settings, ~5 min on 2 cores
    python benchmarks/memory_scale.py --device cuda --batch-size 64 --out runs/memory_gpu.json

The stamp's class search is off (``patch_search="delta"``): with 1,000 classes it would run 1,000 targeted
searches in a round where δ gives no stamp (docs/performance.md says what that costs).
"""
from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import threading
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).parent.parent / "src"))
from ibau import IBAUConfig, unlearn  # noqa: E402
from ibau.utils import environment  # noqa: E402

#: (δ steps a round, rounds): more δ steps, then more rounds, each against the first
SETTINGS = [(1, 1), (8, 1), (1, 5)]


class PeakRSS:
    """The largest resident set size of this process seen since the last :meth:`take` (sampled every 5 ms;
    the kernel's ``ru_maxrss`` never resets, so it only bounds the whole run)."""

    def __init__(self, interval: float = 0.005):
        self.interval, self.peak, self._stop = interval, 0, threading.Event()
        self._thread = threading.Thread(target=self._poll, daemon=True)
        self._thread.start()

    @staticmethod
    def now() -> int:
        with open("/proc/self/statm") as f:
            return int(f.read().split()[1]) * resource.getpagesize()

    def _poll(self) -> None:
        while not self._stop.is_set():
            self.peak = max(self.peak, self.now())
            time.sleep(self.interval)

    def take(self) -> int:
        peak, self.peak = max(self.peak, self.now()), 0
        return peak

    def close(self) -> None:
        self._stop.set()
        self._thread.join()


def one_setting(args) -> dict:
    """Run one (δ steps, rounds) setting in this process; per-round peaks in MiB."""
    import torchvision

    torch.manual_seed(0)
    device = torch.device(args.device)
    model = torchvision.models.resnet50(weights=None).to(device).eval()
    g = torch.Generator().manual_seed(0)
    x = torch.rand(args.clean_size, 3, args.image_size, args.image_size, generator=g)
    y = torch.randint(0, 1000, (args.clean_size,), generator=g)
    cfg = IBAUConfig(rounds=args.rounds, batch_size=args.batch_size, inner_steps=args.inner_steps,
                     outer_steps=args.outer_steps, min_steps=0, patch_search="delta", device=str(device))
    cuda = device.type == "cuda"
    rss = None if cuda else PeakRSS()
    if cuda:
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
    base = torch.cuda.memory_allocated() if cuda else PeakRSS.now()
    peaks: list[float] = []

    def per_round(record, net, delta):  # the callback's time is not counted in the round's seconds
        if cuda:
            torch.cuda.synchronize()
            peaks.append(torch.cuda.max_memory_allocated() / 2**20)
            torch.cuda.reset_peak_memory_stats()
        else:
            peaks.append(rss.take() / 2**20)
        return None

    res = unlearn(model, (x, y), cfg, callback=per_round, progress=False)
    if rss is not None:
        rss.close()
    theta = [(h.seconds - h.inner_seconds) / args.outer_steps for h in res.history]
    return {"inner_steps": args.inner_steps, "rounds": args.rounds, "baseline_mib": base / 2**20,
            "peak_mib_per_round": peaks, "seconds_per_theta_step": theta,
            "delta_search_seconds": [h.inner_seconds for h in res.history]}  # δ steps and the stamp search


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--batch-size", type=int, default=4)
    ap.add_argument("--clean-size", type=int, default=16, help="synthetic clean images (default 16)")
    ap.add_argument("--image-size", type=int, default=224)
    ap.add_argument("--outer-steps", type=int, default=2, help="θ steps a round (default 2)")
    ap.add_argument("--out", help="write the measurements as JSON here")
    ap.add_argument("--inner-steps", type=int, help=argparse.SUPPRESS)  # set: run one setting, print JSON
    ap.add_argument("--rounds", type=int, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.inner_steps is not None:
        print(json.dumps(one_setting(args)))
        return
    common = ["--device", args.device, "--batch-size", str(args.batch_size), "--clean-size", str(args.clean_size),
              "--image-size", str(args.image_size), "--outer-steps", str(args.outer_steps)]
    rows = []
    for steps, rounds in SETTINGS:
        done = subprocess.run([sys.executable, __file__, *common, "--inner-steps", str(steps), "--rounds", str(rounds)],
                              capture_output=True, text=True, check=True)
        rows.append(json.loads(done.stdout.strip().splitlines()[-1]))
        r = rows[-1]
        print(f"δ steps {steps}, rounds {rounds}: peak MiB per round "
              f"{', '.join(f'{p:.0f}' for p in r['peak_mib_per_round'])} (process at start {r['baseline_mib']:.0f}); "
              f"s per θ step {', '.join(f'{s:.2f}' for s in r['seconds_per_theta_step'])}; "
              f"s of δ search (its steps and the stamp) {', '.join(f'{s:.1f}' for s in r['delta_search_seconds'])}",
              flush=True)
    first = rows[0]["peak_mib_per_round"][0]
    worst = max(p for r in rows for p in r["peak_mib_per_round"])
    print(f"largest peak / first setting's peak: {worst / first:.3f} (1.0: memory does not grow with δ steps or rounds)")
    if args.out:
        Path(args.out).write_text(json.dumps({"rows": rows, "args": vars(args), "env": environment(),
                                              "threads": torch.get_num_threads()}, indent=2))


if __name__ == "__main__":
    main()
