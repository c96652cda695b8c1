#!/bin/bash
# Issue 19 part 3, stop 48: the candidate without its smooth δ (b2r2n100: the l2 bound of 100, the bounded search,
# two restarts) on the two GTSRB rows where the smooth screen picked a class other than the target (Blend seed 2:
# class 10; Trojan WM seed 1: class 12) and the candidate still met both targets. Two runs side by side, one
# thread each, both lanes SIGSTOPped: seconds are no timings.
cd /work/main
export OMP_NUM_THREADS=1
F="b2r2n100=default,norm=l2,norm_bound=100,bounded_search=10,per_delta_optimizer=true,inner_restarts=2"
G=docs/measurements/issue17/gtsrb/models
run() {  # the model folder, the tag, the seed
  .venv/bin/python benchmarks/compare_presets.py "$F" --task cifar --npz ../shared/data/gtsrb.npz \
      --model $G/$1/model.safetensors --trigger $G/$1/trigger.json --tag $2 --seeds $3 \
      --rounds 5 --threads 1 --out docs/measurements/issue19/stop48
}
run train-blend-r0.2-s0-f46c2426 gtsrb_blend 2 &
run train-trojan_wm-r0.2-s0-418b8954 gtsrb_trojan_wm 1 &
wait
