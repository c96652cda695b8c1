#!/bin/bash
# issue 19 part 3: the ℓ2 cap of 100 with three δs a round (seed 0) and with two (seed 1), side by side; both
# grid lanes paused meanwhile
cd /work/main
export OMP_NUM_THREADS=1
M=docs/measurements/issue17/cifar/models/train-multi7-r0.2-s0-c2d1f1cf
P=$(pgrep -f "ibau bench" | tr '\n' ' '); kill -STOP $P
C="default,norm=l2,norm_bound=100,bounded_search=10,per_delta_optimizer=true,round_selection=probe,acc_guard=0.02,guard_mode=select"
O="--task cifar --npz ../shared/data/cifar10.npz --model $M/model.safetensors --trigger $M/trigger.json --tag cifar_multi7 --rounds 5 --threads 1 --out docs/measurements/issue19/stop43"
.venv/bin/python benchmarks/compare_presets.py "b2csgr3n100=$C,inner_restarts=3" $O --seeds 0 > runs/b100b_r3.log 2>&1 &
.venv/bin/python benchmarks/compare_presets.py "b2csgr2n100=$C,inner_restarts=2" $O --seeds 1 > runs/b100b_r2.log 2>&1 &
wait
kill -CONT $P
