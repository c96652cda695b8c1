#!/bin/bash
# Issue 19 part 3, stop 45: clean_distill=1 on top of the default, more cases. Two processes side by side (one thread
# each), both lanes SIGSTOPped: (a) the authors' checkpoint, seeds 1 and 2 (issue 15's d15 records beside them),
# then the CPU CIFAR-10 BadNets model of issue 17 with and without it (seed 0, 3 rounds); (b) digits GroupNorm-100
# splits 3 and 4 with and without it (models retrained here at one thread).
cd /work/main
export OMP_NUM_THREADS=1
S=docs/measurements/issue19/stop45
M=docs/measurements/issue17/cifar/models/train-badnets-r0.2-s0-b4417bd7
(
  .venv/bin/python benchmarks/compare_presets.py "d15d1=default,clean_distill=1" --task authors --npz ../shared/data/cifar10.npz \
      --model ../shared/models/badnets_8_02_ckpt.pth --rounds 3 --seeds 1 2 --threads 1 --out $S
  for c in "d15=default" "d15d1=default,clean_distill=1"; do
    .venv/bin/python benchmarks/compare_presets.py "$c" --task cifar --npz ../shared/data/cifar10.npz --model $M/model.safetensors \
        --trigger $M/trigger.json --tag cifar_badnets --rounds 3 --seeds 0 --threads 1 --out $S
  done
) &
(
  O="--task digits --arch dp:small_vgg --clean-size 100 --rounds 5 --threads 1 --out $S"
  for s in 3 4; do
    .venv/bin/python benchmarks/compare_presets.py "d15b100=default,batch_size=100" $O --split-seed $s --seeds $s
    .venv/bin/python benchmarks/compare_presets.py "d15b100d1=default,batch_size=100,clean_distill=1" $O --split-seed $s --seeds $s
  done
) &
wait
