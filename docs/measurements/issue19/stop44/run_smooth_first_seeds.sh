#!/bin/bash
# Issue 19 part 3, stop 44: b2r2n100s3f (smooth_rounds="first") on multi7 seeds 1 and 2, side by side (one thread
# each), both lanes SIGSTOPped.
cd /work/main
export OMP_NUM_THREADS=1
F="b2r2n100s3f=default,norm=l2,norm_bound=100,bounded_search=10,per_delta_optimizer=true,inner_restarts=2,smooth_search=3,smooth_rounds=first"
M=docs/measurements/issue17/cifar/models/train-multi7-r0.2-s0-c2d1f1cf
O="--task cifar --npz ../shared/data/cifar10.npz --model $M/model.safetensors --trigger $M/trigger.json --tag cifar_multi7 --rounds 5 --threads 1 --out docs/measurements/issue19/stop44"
.venv/bin/python benchmarks/compare_presets.py "$F" $O --seeds 1 &
.venv/bin/python benchmarks/compare_presets.py "$F" $O --seeds 2 &
wait
