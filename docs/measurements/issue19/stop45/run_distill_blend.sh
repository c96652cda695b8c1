#!/bin/bash
# Issue 19 part 3, stop 45: does clean_distill=1 let a dense trigger back? The default with and without it on the
# GTSRB Blend development model, seed 0, 5 rounds, side by side (one thread each), both lanes SIGSTOPped.
cd /work/main
export OMP_NUM_THREADS=1
M=docs/measurements/issue17/gtsrb/models/train-blend-r0.2-s0-f46c2426
for c in "d15=default" "d15d1=default,clean_distill=1"; do
  .venv/bin/python benchmarks/compare_presets.py "$c" --task cifar --npz ../shared/data/gtsrb.npz --model $M/model.safetensors \
      --trigger $M/trigger.json --tag gtsrb_blend --rounds 5 --seeds 0 --threads 1 --out docs/measurements/issue19/stop45 &
done
wait
