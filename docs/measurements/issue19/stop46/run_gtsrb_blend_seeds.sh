#!/bin/bash
# Issue 19 part 3, stop 46: is stop 45's "distillation lets GTSRB Blend back" (11.1% against the default's 0.6%,
# seed 0) a property of the anchor or one draw of a noisy run? The default and clean_distill=1 on defense seeds 1
# and 2 of the same model, 5 rounds, one thread. Usage: run_gtsrb_blend_seeds.sh "NAME=default,..."
cd /work/main
export OMP_NUM_THREADS=1
M=docs/measurements/issue17/gtsrb/models/train-blend-r0.2-s0-f46c2426
.venv/bin/python benchmarks/compare_presets.py "$1" --task cifar --npz ../shared/data/gtsrb.npz --model $M/model.safetensors \
    --trigger $M/trigger.json --tag gtsrb_blend --rounds 5 --seeds 1 2 --threads 1 --out docs/measurements/issue19/stop46
