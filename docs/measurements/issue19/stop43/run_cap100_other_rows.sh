#!/bin/bash
# issue 19 part 3: b2csgr2n100 (the ℓ2 cap of 100) on the authors' CIFAR-10 BadNets checkpoint and on GTSRB ℓ2 inv
# (development models), side by side; both grid lanes paused meanwhile
cd /work/main
export OMP_NUM_THREADS=1
P=$(pgrep -f "ibau bench" | tr '\n' ' '); kill -STOP $P
C="b2csgr2n100=default,norm=l2,norm_bound=100,bounded_search=10,per_delta_optimizer=true,round_selection=probe,acc_guard=0.02,guard_mode=select,inner_restarts=2"
.venv/bin/python benchmarks/compare_presets.py "$C" --task authors --npz ../shared/data/cifar10.npz --model ../shared/models/badnets_8_02_ckpt.pth --rounds 5 --threads 1 --seeds 0 --out docs/measurements/issue19/stop43 > runs/b100c_authors.log 2>&1 &
M=docs/measurements/issue17/gtsrb/models/train-l2_inv-r0.2-s0-4d6a05cc
.venv/bin/python benchmarks/compare_presets.py "$C" --task cifar --npz ../shared/data/gtsrb.npz --model $M/model.safetensors --trigger $M/trigger.json --tag gtsrb_l2inv --rounds 5 --threads 1 --seeds 0 --out docs/measurements/issue19/stop43 > runs/b100c_l2inv.log 2>&1 &
wait
kill -CONT $P
