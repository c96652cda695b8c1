#!/bin/bash
# Issue 19 part 3, stop 46: would the step rule break the demo? The demo's task (digits small VGG with BatchNorm,
# 400 clean images, the demo's batch of 25 and Adam 2e-4, which outer_lr_size=5000 shrinks to 5.7e-5), split 0,
# 5 rounds, the default and szl side by side (one thread each, both lanes SIGSTOPped).
cd /work/main
export OMP_NUM_THREADS=1
O="--task digits --arch small_vgg --clean-size 400 --rounds 5 --threads 1 --split-seed 0 --seeds 0 --out docs/measurements/issue19/stop46"
for c in "d15=default" "szl=default,outer_lr_size=5000"; do
  .venv/bin/python benchmarks/compare_presets.py "$c" $O &
done
wait
