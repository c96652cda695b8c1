"""Time to effect of every defense on one model, in one run (issue 4; paper Table 6).

Each defense runs through `ibau defend`'s own functions on the same model and the same split (5,000
clean test images for the defense, the other test images held out). Held-out ASR/ACC are measured at
every checkpoint with the defense's clock paused; the time to effect is the defense time until ASR first
falls below 20%. One JSON record per method is written as soon as it finishes, so an interrupted run
resumes where it stopped; the table compares each method with I-BAU measured in the same run.

    python benchmarks/time_to_effect.py --npz ../shared/data/cifar10.npz \\
        --model runs/cifar_attacks/badnets/model.safetensors --out runs/tte
    python benchmarks/time_to_effect.py ... --methods ibau fine_pruning --set nad.teacher_epochs=5
"""
from __future__ import annotations

import argparse
import json
import logging
import time
from pathlib import Path

from ibau.attacks import parse_options
from ibau.bench.paper import TABLE6
from ibau.defenses import DEFENSES
from ibau.metrics import DEFINITIONS
from ibau.pipeline.defend import build_defense, defense_config, load_for_dataset, run_defense, trigger_for
from ibau.records import write_record as write_json
from ibau.utils import environment


def run_one(method: str, args, options: dict) -> dict:
    net, card, clean, held = load_for_dataset(args.model, "npz", args.npz, False, args.clean_size, args.seed)
    trigger = trigger_for(card, None)
    defense = build_defense(method, card, seed=args.seed, device=args.device, options=options, data_dir=args.npz)
    t0 = time.perf_counter()
    result, before, after = run_defense(defense, net, clean, held, trigger, card.num_classes,
                                        progress=not args.no_progress)
    return {"method": method, "model": str(args.model), "seed": args.seed, "clean_size": len(clean),
            "held_out": len(held), "time_to_effect": result.time_to_effect, "acc_at_effect": result.acc_at_effect,
            "seconds": result.seconds, "wall_seconds": time.perf_counter() - t0, "before": before, "after": after,
            "flagged": result.flagged, "anomaly": result.anomaly, "history": result.history,
            "details": result.details(),
            "config": defense_config(defense),
            "definitions": DEFINITIONS, "environment": environment(), "device": device_name(args.device)}


def device_name(device: str | None) -> str:
    import torch

    from ibau.utils import resolve_device

    dev = resolve_device(device)
    return torch.cuda.get_device_name(dev) if dev.type == "cuda" else f"cpu ({torch.get_num_threads()} threads)"


def table(records: dict[str, dict]) -> str:
    ref = records.get("ibau", {}).get("time_to_effect")
    rows = ["| method | seconds to effect | ACC at effect % | defense s | final ACC / ASR % | × I-BAU's time | paper s (GPU) |",
            "|---|---:|---:|---:|---:|---:|---:|"]
    for method, r in records.items():
        tte, acc = r["time_to_effect"], r["acc_at_effect"]
        ratio = f"{tte / ref:.1f}" if tte is not None and ref else "–"
        cells = [method, "never" if tte is None else f"{tte:.1f}", "–" if acc is None else f"{100 * acc:.2f}",
                 f"{r['seconds']:.1f}", f"{100 * r['after']['acc']:.2f} / {100 * r['after']['asr']:.2f}", ratio,
                 str(TABLE6.get(method, "–"))]
        rows.append("| " + " | ".join(cells) + " |")
    return "\n".join(rows)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--npz", required=True)
    ap.add_argument("--model", required=True)
    ap.add_argument("--out", type=Path, default=Path("runs/tte"))
    ap.add_argument("--methods", nargs="*", default=list(DEFENSES))
    ap.add_argument("--set", nargs="*", default=[], help="METHOD.KEY=VALUE config overrides")
    ap.add_argument("--clean-size", type=int, default=5000)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--device", default=None)
    ap.add_argument("--no-progress", action="store_true")
    ap.add_argument("--docs", action="store_true", help="copy the records to docs/measurements/time_to_effect/LABEL "
                    "and write the table into docs/results.md between the LABEL markers")
    ap.add_argument("--label", default="cpu", help="which machine the run is from (cpu, h100, ...): names the "
                    "docs folder and table")
    args = ap.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(message)s")  # the defense's before/after lines
    args.out.mkdir(parents=True, exist_ok=True)
    records = {}
    for method in args.methods:
        path = args.out / f"{method}.json"
        if not path.exists():
            prefix = method + "."
            options = parse_options([s[len(prefix):] for s in args.set if s.startswith(prefix)])
            print(f"== {method} {options or ''}", flush=True)
            write_json(path, run_one(method, args, options))
        records[method] = json.loads(path.read_text())
    text = table(records)
    print(text)
    if args.docs:
        write_docs(records, text, args.label)


def write_docs(records: dict[str, dict], text: str, label: str) -> None:
    root = Path(__file__).resolve().parents[1]
    dest = root / "docs" / "measurements" / "time_to_effect" / label
    for method, record in records.items():
        write_json(dest / f"{method}.json", record)
    doc = root / "docs" / "results.md"
    start = f"<!-- tte table {label}: generated by benchmarks/time_to_effect.py -->"
    end = f"<!-- end tte table {label} -->"
    if start not in doc.read_text():
        raise SystemExit(f"docs/results.md has no '{start}' marker; add the marker pair where the table belongs")
    body = doc.read_text()
    head, _, rest = body.partition(start)
    tail = rest.split(end, 1)[1] if end in rest else ""
    doc.write_text(head + start + "\n" + text + "\n" + end + tail)


if __name__ == "__main__":
    main()
