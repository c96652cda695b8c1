#!/bin/bash
# Issue 19 part 3, stop 51: patch_rounds=kept side by side with the default on the development CIFAR-10 Blend model
# (issue 17's, seed 0; its backdoor rises again in rounds 2-3 once round 1 has unlearned its stamp), 5,000 clean
# images, defense seeds 0-2, 3 rounds, one thread (compare_presets, both columns on this machine).
cd /work/main
export OMP_NUM_THREADS=1
M=docs/measurements/issue17/cifar/models/train-blend-r0.2-s0-f0da0bc7
for c in "d15=default" "kept=default,patch_rounds=kept"; do
  .venv/bin/python benchmarks/compare_presets.py "$c" --task cifar --npz ../shared/data/cifar10.npz \
      --model $M/model.safetensors --trigger $M/trigger.json --tag blend --seeds ${SEEDS:-0 1 2} --rounds 3 \
      --threads 1 --out docs/measurements/issue19/stop51
done
