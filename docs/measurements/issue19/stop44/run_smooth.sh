#!/bin/bash
# Issue 19 part 3, stop 44: the capped candidate (b2csgr2n100c) plus a smooth δ (smooth_search=3) on CIFAR-10's
# seven triggers, the development model; two seeds side by side, one thread each, both lanes SIGSTOPped.
cd /work/main
export OMP_NUM_THREADS=1
C="b2csgr2n100cs3=default,norm=l2,norm_bound=100,bounded_search=10,per_delta_optimizer=true,inner_restarts=2,round_selection=probe,acc_guard=0.02,guard_mode=select,guard_fallback=closest,smooth_search=3"
M=docs/measurements/issue17/cifar/models/train-multi7-r0.2-s0-c2d1f1cf
for s in "$@"; do
  .venv/bin/python benchmarks/compare_presets.py "$C" --task cifar --npz ../shared/data/cifar10.npz --model $M/model.safetensors \
      --trigger $M/trigger.json --tag cifar_multi7 --rounds 5 --threads 1 --seeds $s --out docs/measurements/issue19/stop44 &
done
wait
