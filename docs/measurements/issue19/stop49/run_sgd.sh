#!/bin/bash
# Issue 19 part 3, stop 49: is the small-clean-set accuracy loss Adam's? Adam moves every weight by about the step
# size whatever the gradient's size, and with 100 images each θ step sees the same images, so the steps add up;
# plain SGD's steps shrink with the clean loss. The default with SGD θ steps, 3 rounds, defense seed 0, one thread.
# Usage: run_sgd.sh STREAM   (a: the authors' checkpoint with 100 images, two steps; b: the other models;
# c: the control, the default's θ steps without the implicit term or the stamp, nearly plain Adam fine-tuning)
# sgd1 diverged in round 1 (δ, unbounded, grew to nan), so a's second run and b were not run.
cd /work/main
export OMP_NUM_THREADS=1
P=".venv/bin/python benchmarks/compare_presets.py"
S=docs/measurements/issue19/stop49
R="--rounds 3 --seeds 0 --threads 1 --out $S"
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
  a) authors 100 "sgd1=default,outer_optimizer=sgd,outer_lr=0.01" "sgd5=default,outer_optimizer=sgd,outer_lr=0.05" ;;
  b) cifar $C/train-blend-r0.2-s0-f0da0bc7 cifar10 blend 100 "${@:2}"
     cifar $C/train-trojan_wm-r0.2-s0-858c1b02 cifar10 trojan_wm 100 "${@:2}"
     cifar $G/train-badnets-r0.2-s0-9f1ae56f gtsrb gtsrb_badnets 100 "${@:2}" ;;
  c) authors 100 "ftc=default,solver_iters=0,patch_threshold=0"
     cifar $C/train-blend-r0.2-s0-f0da0bc7 cifar10 blend 100 "ftc=default,solver_iters=0,patch_threshold=0" ;;
esac
