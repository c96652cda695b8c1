#!/bin/bash
# Issue 19 part 3, stop 44: b2r2n100s3 with smooth_rounds="first" (round 1's smooth δ unlearned in every round, no
# later search) on GTSRB Blend and CIFAR-10 multi7, seed 0, side by side (one thread each), both lanes SIGSTOPped.
cd /work/main
export OMP_NUM_THREADS=1
F="b2r2n100s3f=default,norm=l2,norm_bound=100,bounded_search=10,per_delta_optimizer=true,inner_restarts=2,smooth_search=3,smooth_rounds=first"
O="--rounds 5 --threads 1 --seeds 0 --out docs/measurements/issue19/stop44"
G=docs/measurements/issue17/gtsrb/models/train-blend-r0.2-s0-f46c2426
M=docs/measurements/issue17/cifar/models/train-multi7-r0.2-s0-c2d1f1cf
.venv/bin/python benchmarks/compare_presets.py "$F" --task cifar --npz ../shared/data/gtsrb.npz --model $G/model.safetensors \
    --trigger $G/trigger.json --tag gtsrb_blend $O &
.venv/bin/python benchmarks/compare_presets.py "$F" --task cifar --npz ../shared/data/cifar10.npz --model $M/model.safetensors \
    --trigger $M/trigger.json --tag cifar_multi7 $O &
wait
