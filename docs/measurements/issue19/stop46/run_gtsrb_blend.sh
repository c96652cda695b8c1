#!/bin/bash
# Issue 19 part 3, stop 46: the size rules (outer_lr_size=5000, clean_distill=1 at clean_distill_size=100) on the
# GTSRB Blend development model with its 5,000 clean images: the θ step is the default's, the distillation weight
# 0.02 (β = 1 there left 11.1% ASR in stop 45). Seed 0, 5 rounds, one thread, both lanes SIGSTOPped.
cd /work/main
export OMP_NUM_THREADS=1
M=docs/measurements/issue17/gtsrb/models/train-blend-r0.2-s0-f46c2426
.venv/bin/python benchmarks/compare_presets.py "sz=default,outer_lr_size=5000,clean_distill=1,clean_distill_size=100" \
    --task cifar --npz ../shared/data/gtsrb.npz --model $M/model.safetensors --trigger $M/trigger.json \
    --tag gtsrb_blend --rounds 5 --seeds 0 --threads 1 --out docs/measurements/issue19/stop46
