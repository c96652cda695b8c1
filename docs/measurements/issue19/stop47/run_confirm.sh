#!/bin/bash
# Issue 19 part 3, stop 47: the default (d15) and the small-clean-set rule (ss) on models the rule was not chosen on,
# with 100 and 500 clean images (defender_split seed 0), 3 rounds, defense seed 0, one thread.
# Usage: run_confirm.sh STREAM   (a, b: two streams side by side, both lanes SIGSTOPped; c after a: the step rule
# and the anchor apart on the authors' checkpoint, where ss left the backdoor; d: steps between, with the anchor)
cd /work/main
export OMP_NUM_THREADS=1
. docs/measurements/issue19/stop47/configs.sh
P=".venv/bin/python benchmarks/compare_presets.py"
S=docs/measurements/issue19/stop47
R="--rounds 3 --seeds 0 --threads 1 --out $S"
cifar() {  # MODEL_DIR NPZ TAG CLEAN_SIZE
  for c in "d15=default" "ss=default,$SS"; do
    $P "$c" --task cifar --npz ../shared/data/$2.npz --model $1/model.safetensors --trigger $1/trigger.json \
        --clean-size $4 --tag $3_c$4 $R
  done
}
authors() {  # CLEAN_SIZE [MORE_CONFIGS...]
  for c in "d15=default" "ss=default,$SS" "${@:2}"; do
    $P "$c" --task authors --npz ../shared/data/cifar10.npz --model ../shared/models/badnets_8_02_ckpt.pth \
        --clean-size $1 --tag c$1 $R
  done
}
C=docs/measurements/issue17/cifar/models
G=docs/measurements/issue17/gtsrb/models
case $1 in
  a) authors 100; authors 500; cifar $C/train-badnets-r0.2-s0-b4417bd7 cifar10 badnets 500 ;;
  b) cifar $G/train-badnets-r0.2-s0-9f1ae56f gtsrb gtsrb_badnets 100; cifar $C/train-blend-r0.2-s0-f0da0bc7 cifar10 blend 100
     cifar $G/train-badnets-r0.2-s0-9f1ae56f gtsrb gtsrb_badnets 500 ;;
  c) authors 100 "szcl=default,outer_lr_size=5000,outer_lr_size_cap=2e-3" \
         "d1f=default,clean_distill=1,clean_distill_size=100,clean_distill_until=5000" ;;
  d) authors 100 "lr5d1f=default,outer_lr=5e-4,clean_distill=1,clean_distill_size=100,clean_distill_until=5000" \
         "lr1d1f=default,outer_lr=1e-3,clean_distill=1,clean_distill_size=100,clean_distill_until=5000" ;;
esac
