#!/bin/bash
# Issue 19 part 3, stop 47: b2sz = stop 44's candidate (b2r2n100s3f) with stop 46's small-clean-set rule (szc), on the
# development models, one run at a time at one thread (the GTSRB lane SIGSTOPped, the CIFAR-10 lane running):
# the digits demo's task (split 0), digits GroupNorm-100 (splits 0-2, batch 100), CIFAR-10 Trojan WM with 100 clean
# images (seed 0). compare_presets.py skips finished records. (GTSRB Blend at 5,000 images was stopped unfinished: the
# faded anchor of run_confirm.sh is off at 5,000 images, where b2sz's β = 0.02 was all that differed from b2r2n100s3f.)
cd /work/main
export OMP_NUM_THREADS=1
. docs/measurements/issue19/stop47/configs.sh
P=".venv/bin/python benchmarks/compare_presets.py"
S=docs/measurements/issue19/stop47
D="--task digits --threads 1 --rounds 5 --out $S"
$P "szc=default,$SZC" $D --arch small_vgg --clean-size 400 --split-seed 0 --seeds 0
$P "b2sz=default,$B2,$SZC" $D --arch small_vgg --clean-size 400 --split-seed 0 --seeds 0
for s in 0 1 2; do
  $P "b2szb100=default,$B2,$SZC,batch_size=100" $D --arch dp:small_vgg --clean-size 100 --split-seed $s --seeds $s
done
M=docs/measurements/issue17/cifar/models/train-trojan_wm-r0.2-s0-858c1b02
$P "b2sz=default,$B2,$SZC" --task cifar --npz ../shared/data/cifar10.npz --model $M/model.safetensors \
    --trigger $M/trigger.json --clean-size 100 --tag trojan_wm_c100 --rounds 3 --seeds 0 --threads 1 --out $S
