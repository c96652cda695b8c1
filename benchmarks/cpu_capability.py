"""One I-BAU round and one fine-tuning epoch under each of PyTorch's CPU kernel sets, side by side in one run.

PyTorch picks its vectorised CPU kernels once per process (``torch.backends.cpu.get_cpu_capability()``;
the ``ATEN_CPU_CAPABILITY`` environment variable caps it). On the development machine (AMD EPYC, AVX512)
the AVX512 kernel of ``expm1``, hence of ELU, is about 9× slower than the AVX2 one, and ELU is the
activation of the authors' small VGG. Each kernel set runs in a fresh process (``benchmarks/round_time.py``
with the same arguments), after a micro-timing of ELU on one activation tensor of the small VGG's first
block (100×32×32×32), and the script prints each set's seconds and its speed-up over the first set:

    python benchmarks/cpu_capability.py --npz ../shared/data/cifar10.npz --model M/model.safetensors \
        --trigger M/trigger.json --capabilities avx512 avx2 -- default=default

Everything after ``--`` goes to round_time.py as configurations. The numbers of two kernel sets are not
bit-identical (dropout's random draws and some reductions differ), so a grid keeps the kernel set its
records were made with; docs/performance.md has the figures.
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

ELU_TIMING = """
import time, torch
x = torch.randn(100, 32, 32, 32, generator=torch.Generator().manual_seed(0))
torch.nn.functional.elu(x)
t = time.perf_counter()
for _ in range(20):
    torch.nn.functional.elu(x)
print(torch.backends.cpu.get_cpu_capability(), (time.perf_counter() - t) / 20)
"""


def run_one(capability: str, args: argparse.Namespace, configs: list[str], out: Path) -> dict:
    """ELU's seconds and round_time.py's record in a process capped at ``capability``."""
    env = {**os.environ, "ATEN_CPU_CAPABILITY": capability}
    name, elu = subprocess.run([sys.executable, "-c", ELU_TIMING], env=env, check=True, capture_output=True,
                               text=True).stdout.split()
    cmd = [sys.executable, str(Path(__file__).with_name("round_time.py")), "--npz", args.npz, "--out", str(out),
           "--clean-size", str(args.clean_size), "--device", "cpu", "--no-bf16-epoch"]
    if args.model:
        cmd += ["--model", args.model]
    if args.trigger:
        cmd += ["--trigger", args.trigger]
    subprocess.run(cmd + configs, env=env, check=True, stdout=subprocess.DEVNULL)
    record = json.loads(out.read_text())
    return {"requested": capability, "capability": name, "elu_seconds": float(elu), **record}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--npz", required=True)
    ap.add_argument("--model", help="a model's safetensors (default: an untrained small VGG, as round_time.py)")
    ap.add_argument("--trigger", help="the model's trigger.json, for ACC/ASR after the round")
    ap.add_argument("--clean-size", type=int, default=5000)
    ap.add_argument("--capabilities", nargs="+", default=["avx512", "avx2"],
                    help="kernel sets, one fresh process each (default: avx512 avx2); the first is the baseline")
    ap.add_argument("--out", help="write every set's record as JSON here")
    ap.add_argument("configs", nargs="*", default=["default=default"],
                    help="round_time.py configurations (default: default=default)")
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        runs = [run_one(c, args, args.configs, Path(tmp) / f"{c}.json") for c in args.capabilities]
    base = runs[0]
    base_ft = sum(base["finetune_epoch"]) / len(base["finetune_epoch"])
    print(f"{'kernels':>8} {'ELU ms':>7} {'FT epoch s':>10} {'faster':>6} " + " ".join(
        f"{r['name'] + ' s':>12} {'x FT':>5} {'faster':>6} {'ACC %':>6} {'ASR %':>6}" for r in base["rows"]))
    for run in runs:
        ft = sum(run["finetune_epoch"]) / len(run["finetune_epoch"])
        cells = " ".join(f"{r['seconds']:12.1f} {r['seconds'] / ft:5.2f} {b['seconds'] / r['seconds']:5.2f}x "
                         f"{100 * r.get('acc', float('nan')):6.2f} {100 * r.get('asr', float('nan')):6.2f}"
                         for r, b in zip(run["rows"], base["rows"]))
        print(f"{run['capability']:>8} {1e3 * run['elu_seconds']:7.2f} {ft:10.1f} {base_ft / ft:5.2f}x {cells}")
    if args.out:
        Path(args.out).write_text(json.dumps(runs, indent=2))


if __name__ == "__main__":
    main()
