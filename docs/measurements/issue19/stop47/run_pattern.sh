#!/bin/bash
# Issue 19 part 3, stop 47: noise in the stamp's mask instead of its pattern (patch_pattern=random) with the
# small-clean-set rule (ssr), where ss unlearned the stamp and kept the backdoor (the authors' checkpoint with 100
# and 500 images) and where ss kept accuracy (issue 17's CIFAR-10 Trojan WM with 100). 3 rounds, seed 0, one
# thread, the GTSRB lane SIGSTOPped and the CIFAR-10 lane running: seconds are no timings.
cd /work/main
export OMP_NUM_THREADS=1
. docs/measurements/issue19/stop47/configs.sh
P=".venv/bin/python benchmarks/compare_presets.py"
R="--rounds 3 --seeds 0 --threads 1 --out docs/measurements/issue19/stop47_pattern"
C="ssr=default,$SS,patch_pattern=random"
$P "$C" --task authors --npz ../shared/data/cifar10.npz --model ../shared/models/badnets_8_02_ckpt.pth --clean-size 100 --tag c100 $R
M=docs/measurements/issue17/cifar/models/train-trojan_wm-r0.2-s0-858c1b02
$P "$C" --task cifar --npz ../shared/data/cifar10.npz --model $M/model.safetensors --trigger $M/trigger.json \
    --clean-size 100 --tag trojan_wm_c100 $R
$P "$C" --task authors --npz ../shared/data/cifar10.npz --model ../shared/models/badnets_8_02_ckpt.pth --clean-size 500 --tag c500 $R
