"""Issue-3 acceptance run: every attack of SPEC §2 on CIFAR-10 (CPU recipe), then I-BAU on each.

Runs the real commands (`ibau attack`, `ibau defend`) one after another and is resumable: a finished
step (its metrics.json exists) is skipped, an interrupted training resumes from its last epoch. Then
`python benchmarks/cifar_results.py` turns the records into docs/results.md.

    nohup python benchmarks/cifar_attacks.py --npz ../shared/data/cifar10.npz --out runs/cifar_attacks &

Order: the clean model first (the ACC reference, and the reference model the optimised triggers excite).
"""
from __future__ import annotations

import argparse
import shutil
import subprocess
import sys
import time
from pathlib import Path

#: run name -> extra `ibau attack` arguments.
RUNS: dict[str, list[str]] = {
    "clean": ["--attack", "none"],
    "badnets": ["--attack", "badnets"],
    "blend": ["--attack", "blend"],
    "l0_inv": ["--attack", "l0_inv", "--reference-model", "{clean}"],
    "l2_inv": ["--attack", "l2_inv", "--reference-model", "{clean}"],
    "smooth": ["--attack", "smooth"],
    "trojan_sq": ["--attack", "trojan_sq", "--reference-model", "{clean}"],
    "trojan_wm": ["--attack", "trojan_wm", "--reference-model", "{clean}"],
    "all_to_all": ["--attack", "badnets", "--all-to-all"],
}
#: the all-to-all recipe (docs/results.md): all training images, 20 epochs, cosine rate; 40% / 50% poison
_A2A_RECIPE = ["--attack", "badnets", "--all-to-all", "--train-limit", "50000", "--epochs", "20", "--lr-schedule", "cosine"]
RUNS.update({f"all_to_all_p{r}": [*_A2A_RECIPE, "--poison-ratio", f"0.{r}"] for r in (4, 5)})
#: run name -> extra `ibau defend` arguments (default: the default preset's 3 rounds).
DEFEND: dict[str, list[str]] = {
    name: ["--rounds", "10", "--defense-option", "model_mode=train"] for name in ("all_to_all_p4", "all_to_all_p5")
}


def ibau(*args: str, log) -> None:
    exe = shutil.which("ibau", path=str(Path(sys.executable).parent)) or "ibau"
    cmd = [exe, *args]
    log.write("$ " + " ".join(cmd) + "\n")
    log.flush()
    t0 = time.perf_counter()
    subprocess.run(cmd, check=True, stdout=log, stderr=subprocess.STDOUT)
    log.write(f"# {time.perf_counter() - t0:.0f}s\n")
    log.flush()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--npz", required=True)
    ap.add_argument("--out", default="runs/cifar_attacks")
    ap.add_argument("--preset", default="cpu")
    ap.add_argument("--only", nargs="*", default=None, help="run names (default: all)")
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    data = ["--dataset", "npz", "--data-dir", args.npz]
    with (out / "commands.log").open("a") as log:
        for name, extra in RUNS.items():
            if args.only and name not in args.only:
                continue
            run = out / name
            extra = [a.replace("{clean}", str(out / "clean" / "model.safetensors")) for a in extra]
            if not (run / "metrics.json").exists():
                ibau("attack", *data, *extra, "--preset", args.preset, "--seed", str(args.seed), "--out", str(run),
                     "--resume", "--no-progress", log=log)
            if name != "clean" and not (run / "ibau" / "metrics.json").exists():
                ibau("defend", "--model", str(run / "model.safetensors"), *data, "--clean-size", "5000",
                     "--method", "ibau", *DEFEND.get(name, []), "--seed", str(args.seed), "--out", str(run / "ibau"),
                     "--no-progress", log=log)
            print(f"{name}: done", flush=True)


if __name__ == "__main__":
    main()
