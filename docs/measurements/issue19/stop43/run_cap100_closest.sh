#!/bin/bash
# issue 19 part 3: the ℓ2 cap with guard_fallback=closest on CIFAR-10 multi7 seed 2 and GTSRB Blend seed 0
# (development models), side by side; both grid lanes paused meanwhile
cd /work/main
export OMP_NUM_THREADS=1
P=$(pgrep -f "ibau bench" | tr '\n' ' '); kill -STOP $P
C="b2csgr2n100c=default,norm=l2,norm_bound=100,bounded_search=10,per_delta_optimizer=true,round_selection=probe,acc_guard=0.02,guard_mode=select,inner_restarts=2,guard_fallback=closest"
M=docs/measurements/issue17/cifar/models/train-multi7-r0.2-s0-c2d1f1cf
.venv/bin/python benchmarks/compare_presets.py "$C" --task cifar --npz ../shared/data/cifar10.npz --model $M/model.safetensors --trigger $M/trigger.json --tag cifar_multi7 --rounds 5 --threads 1 --seeds 2 --out docs/measurements/issue19/stop43 > runs/b100d_multi7.log 2>&1 &
M=docs/measurements/issue17/gtsrb/models/train-blend-r0.2-s0-f46c2426
.venv/bin/python benchmarks/compare_presets.py "$C" --task cifar --npz ../shared/data/gtsrb.npz --model $M/model.safetensors --trigger $M/trigger.json --tag gtsrb_blend --rounds 5 --threads 1 --seeds 0 --out docs/measurements/issue19/stop43 > runs/b100d_blend.log 2>&1 &
wait
kill -CONT $P
