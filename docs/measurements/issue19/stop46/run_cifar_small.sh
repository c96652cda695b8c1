#!/bin/bash
# Issue 19 part 3, stop 46: the default and clean_distill weights on CIFAR-10 Trojan WM (issue 17's Table 5 model)
# with small clean sets (defender_split seed 0), 3 rounds, seed 0 unless SEEDS says, one thread each, both lanes SIGSTOPped.
# Usage: [SEEDS="1 2"] [MODEL=models/train-... TAG=badnets] run_cifar_small.sh CLEAN_SIZE "NAME=default,..." ["NAME=..."]
cd /work/main
export OMP_NUM_THREADS=1
M=${MODEL:-docs/measurements/issue17/cifar/models/train-trojan_wm-r0.2-s0-858c1b02}
n=$1; shift
for c in "$@"; do
  .venv/bin/python benchmarks/compare_presets.py "$c" --task cifar --npz ../shared/data/cifar10.npz --model $M/model.safetensors \
      --trigger $M/trigger.json --clean-size $n --tag ${TAG:-trojan_wm}_c$n --rounds 3 --seeds ${SEEDS:-0} --threads 1 \
      --out docs/measurements/issue19/stop46 &
done
wait
