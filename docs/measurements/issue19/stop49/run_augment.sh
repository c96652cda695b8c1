#!/bin/bash
# Issue 19 part 3, stop 49: the default's θ steps on augmented clean images (outer_augment) below 5,000 images,
# where the default loses accuracy (the θ steps fit a small clean set), 3 rounds, defense seed 0, one thread.
# Usage: run_augment.sh STREAM   (a: 100 clean images; b: 500 images and the digits GroupNorm-100 models)
cd /work/main
export OMP_NUM_THREADS=1
P=".venv/bin/python benchmarks/compare_presets.py"
S=docs/measurements/issue19/stop49
R="--rounds 3 --seeds 0 --threads 1 --out $S"
CR="cr=default,outer_augment=crop,outer_augment_until=5000"
FC="fc=default,outer_augment=flip_crop,outer_augment_until=5000"
cifar() {  # MODEL_DIR NPZ TAG CLEAN_SIZE CONFIGS...
  for c in "${@:5}"; do
    $P "$c" --task cifar --npz ../shared/data/$2.npz --model $1/model.safetensors --trigger $1/trigger.json \
        --clean-size $4 --tag $3_c$4 $R
  done
}
authors() {  # CLEAN_SIZE CONFIGS...
  for c in "${@:2}"; do
    $P "$c" --task authors --npz ../shared/data/cifar10.npz --model ../shared/models/badnets_8_02_ckpt.pth \
        --clean-size $1 --tag c$1 $R
  done
}
C=docs/measurements/issue17/cifar/models
G=docs/measurements/issue17/gtsrb/models
case $1 in
  a) authors 100 "$CR" "$FC"
     cifar $C/train-blend-r0.2-s0-f0da0bc7 cifar10 blend 100 "$CR"
     cifar $G/train-badnets-r0.2-s0-9f1ae56f gtsrb gtsrb_badnets 100 "$CR"
     cifar $C/train-trojan_wm-r0.2-s0-858c1b02 cifar10 trojan_wm 100 "d15=default" "$CR" ;;
  b) authors 500 "$CR"
     cifar $G/train-badnets-r0.2-s0-9f1ae56f gtsrb gtsrb_badnets 500 "$CR"
     cifar $C/train-badnets-r0.2-s0-b4417bd7 cifar10 badnets 500 "$CR" ;;
esac
