#!/bin/bash
# Issue 19 part 3, stop 47: does the stamp found in round 1 still work after the round (patch_fooling_after, on clean
# images only) where the backdoor survived, and not where it was removed? The runs of run_confirm.sh again, with the
# new diagnostic, into stop47_signal/ (3 rounds, seed 0, one thread, beside the lanes: seconds are no timings).
# Stopped after the authors' checkpoint at 100 images, which answered the question (docs/presets.md).
cd /work/main
export OMP_NUM_THREADS=1
. docs/measurements/issue19/stop47/configs.sh
P=".venv/bin/python benchmarks/compare_presets.py"
R="--rounds 3 --seeds 0 --threads 1 --out docs/measurements/issue19/stop47_signal"
for n in 100 500; do
  for c in "d15=default" "ss=default,$SS"; do
    $P "$c" --task authors --npz ../shared/data/cifar10.npz --model ../shared/models/badnets_8_02_ckpt.pth --clean-size $n --tag c$n $R
  done
done
for m in trojan_wm-r0.2-s0-858c1b02:trojan_wm blend-r0.2-s0-f0da0bc7:blend; do
  M=docs/measurements/issue17/cifar/models/train-${m%%:*}
  for c in "d15=default" "ss=default,$SS"; do
    $P "$c" --task cifar --npz ../shared/data/cifar10.npz --model $M/model.safetensors --trigger $M/trigger.json \
        --clean-size 100 --tag ${m##*:}_c100 $R
  done
done
