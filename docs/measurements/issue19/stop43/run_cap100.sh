#!/bin/bash
# issue 19 part 3: b2csgr2 with its unbounded δs capped at an ℓ2 norm of 100 (round 1's δ reached 4,470; later
# rounds' ~35-40) on CIFAR-10 multi7 (development model), seed 0; GTSRB lane paused meanwhile
cd /work/main
export OMP_NUM_THREADS=1
M=docs/measurements/issue17/cifar/models/train-multi7-r0.2-s0-c2d1f1cf
GP=$(pgrep -f "preset cpu_gtsrb" | tr '\n' ' '); kill -STOP $GP
.venv/bin/python benchmarks/compare_presets.py "b2csgr2n100=default,norm=l2,norm_bound=100,bounded_search=10,per_delta_optimizer=true,round_selection=probe,acc_guard=0.02,guard_mode=select,inner_restarts=2" --task cifar --npz ../shared/data/cifar10.npz --model $M/model.safetensors --trigger $M/trigger.json --tag cifar_multi7 --rounds 5 --threads 1 --seeds 0 --out docs/measurements/issue19/stop43
kill -CONT $GP
