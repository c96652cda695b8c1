#!/bin/bash
# Issue 19 part 3, stop 48: the candidate b2r2n100s3f (stop 44) on the GTSRB development rows that the default
# leaves failing at 3 rounds (Blend, l2 inv, Trojan WM), with the defense seeds it has not run there (stop 44/45
# ran Blend seed 0, Trojan WM seed 2, and l2 inv seed 0 without "first"). One run at a time on one thread, the
# GTSRB lane SIGSTOPped, the CIFAR-10 lane beside it: seconds are no timings.
cd /work/main
export OMP_NUM_THREADS=1
F="b2r2n100s3f=default,norm=l2,norm_bound=100,bounded_search=10,per_delta_optimizer=true,inner_restarts=2,smooth_search=3,smooth_rounds=first"
G=docs/measurements/issue17/gtsrb/models
run() {  # the model folder, the tag, the seed
  .venv/bin/python benchmarks/compare_presets.py "$F" --task cifar --npz ../shared/data/gtsrb.npz \
      --model $G/$1/model.safetensors --trigger $G/$1/trigger.json --tag $2 --seeds $3 \
      --rounds 5 --threads 1 --out docs/measurements/issue19/stop48
}
run train-trojan_wm-r0.2-s0-418b8954 gtsrb_trojan_wm 0
run train-l2_inv-r0.2-s0-4d6a05cc gtsrb_l2inv 1
run train-blend-r0.2-s0-f46c2426 gtsrb_blend 1
run train-trojan_wm-r0.2-s0-418b8954 gtsrb_trojan_wm 1
run train-l2_inv-r0.2-s0-4d6a05cc gtsrb_l2inv 2
run train-blend-r0.2-s0-f46c2426 gtsrb_blend 2
run train-l2_inv-r0.2-s0-4d6a05cc gtsrb_l2inv 0
