#!/bin/bash
# Issue 19 part 3, stop 44: seed 2 of the capped candidate with the smooth δ, and the same without the guard and
# the probe (the last round kept, all 5,000 clean images unlearning) on seed 0; both lanes SIGSTOPped.
cd /work/main
export OMP_NUM_THREADS=1
C="b2csgr2n100cs3=default,norm=l2,norm_bound=100,bounded_search=10,per_delta_optimizer=true,inner_restarts=2,round_selection=probe,acc_guard=0.02,guard_mode=select,guard_fallback=closest,smooth_search=3"
N="b2r2n100s3=default,norm=l2,norm_bound=100,bounded_search=10,per_delta_optimizer=true,inner_restarts=2,smooth_search=3"
M=docs/measurements/issue17/cifar/models/train-multi7-r0.2-s0-c2d1f1cf
O="--task cifar --npz ../shared/data/cifar10.npz --model $M/model.safetensors --trigger $M/trigger.json --tag cifar_multi7 --rounds 5 --threads 1 --out docs/measurements/issue19/stop44"
.venv/bin/python benchmarks/compare_presets.py "$C" $O --seeds 2 &
.venv/bin/python benchmarks/compare_presets.py "$N" $O --seeds 0 &
wait
