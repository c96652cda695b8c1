#!/bin/bash
# Issue 19 part 3, stop 50: can the step between (stop 49's `mid`, the step 1e-3 and the anchor at 100 images) keep
# CIFAR-10 Blend's backdoor below 10% with 100 clean images? Development model: issue 17's Blend (seed 0); defense
# seeds 0-2, 3 rounds, one thread, one run at a time (the GTSRB lane SIGSTOPped, the CIFAR-10 lane beside it).
# Usage: run_small_clean.sh STREAM
#   screen: mid400 (mid with its rules ending at 400 images: at 100 images the same run as mid) with
#           more δ images in each θ step (pf10: perturb_fraction 0.1, ten of each batch of 100 instead of one),
#           a step between mid's and the default's (lr14: 1.41e-3 at 100 images) and a lighter anchor (d05: 0.5).
#   candidate: issue 19's candidate b2r2n100s3f on top of the default's small-set rules (since stop 50 in
#           IBAUConfig(): cand) with 100 clean images, seed 0, on the authors' checkpoint, Blend and Trojan WM.
#   authors500: the authors' checkpoint with 500 clean images, where stop 47's default left 30.7% (seed 0): the
#           default (d15, the same run as before stop 50 at this size) with seeds 1-2, and stop 49's mid (the
#           anchor faded out at 5,000: weight 9/49 at 500, the step 2e-3) with seeds 0-2.
cd /work/main
export OMP_NUM_THREADS=1
P=".venv/bin/python benchmarks/compare_presets.py"
R="--rounds 3 --threads 1 --out docs/measurements/issue19/stop50"
cifar() {  # MODEL_DIR NPZ TAG CONFIGS... (100 clean images)
  for c in "${@:4}"; do
    $P "$c" --task cifar --npz ../shared/data/$2.npz --model $1/model.safetensors --trigger $1/trigger.json \
        --clean-size 100 --tag $3_c100 --seeds ${SEEDS:-0 1 2} $R
  done
}
C=docs/measurements/issue17/cifar/models
BLEND=$C/train-blend-r0.2-s0-f0da0bc7
M="default,outer_lr_size=400,outer_lr_size_cap=2e-3,clean_distill=1,clean_distill_size=100,clean_distill_until=400"
case $1 in
  screen) cifar $BLEND cifar10 blend "pf10=$M,perturb_fraction=0.1" "lr14=default,outer_lr_size=400,outer_lr_size_cap=2.83e-3,clean_distill=1,clean_distill_size=100,clean_distill_until=400" "d05=default,outer_lr_size=400,outer_lr_size_cap=2e-3,clean_distill=0.5,clean_distill_size=100,clean_distill_until=400" ;;
  candidate) CAND="cand=default,norm=l2,norm_bound=100,bounded_search=10,per_delta_optimizer=true,inner_restarts=2,smooth_search=3,smooth_rounds=first"
             $P "$CAND" --task authors --npz ../shared/data/cifar10.npz --model ../shared/models/badnets_8_02_ckpt.pth \
                 --clean-size 100 --tag c100 --seeds ${SEEDS:-0} $R
             SEEDS=${SEEDS:-0} cifar $BLEND cifar10 blend "$CAND"
             SEEDS=${SEEDS:-0} cifar $C/train-trojan_wm-r0.2-s0-858c1b02 cifar10 trojan_wm "$CAND" ;;
  authors500) a500() { $P "$1" --task authors --npz ../shared/data/cifar10.npz --model ../shared/models/badnets_8_02_ckpt.pth \
                           --clean-size 500 --tag c500 --seeds $2 $R; }
              a500 "d15=default" "1 2"
              a500 "mid=default,outer_lr_size=5000,outer_lr_size_cap=7.07e-3,clean_distill=1,clean_distill_size=100,clean_distill_until=5000" "0 1 2" ;;
  *) echo "usage: $0 screen|candidate|authors500" >&2; exit 2 ;;
esac
