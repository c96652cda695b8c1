#!/bin/bash
# Issue 19 part 3, stop 49: where the default's accuracy goes with 100 clean images (stop 47: 14-29 points), 3 rounds,
# defense seed 0 (mid_seeds: 0-2), one thread, one run at a time. Usage: run_small_clean.sh STREAM
#   augment: is it overfitting? The θ steps on cropped (cr) or cropped and mirrored (fc) clean images below 5,000
#            images (outer_augment), and the default on Trojan WM through this script for reference (d15).
#   sgd:     is it Adam's? Adam moves every weight by about the step size whatever the gradient's size, and with 100
#            images each θ step sees the same images. sgd1 diverged in round 1 (the unbounded δ grew to nan), so
#            no other step or model was run.
#   control: the default's θ steps without the implicit term or the stamp (ftc), nearly plain Adam fine-tuning.
#   mid:     stop 47's lr1d1f as a size rule (the step 1e-3 at 100 images, the default's from about 400 on; the
#            anchor faded out at 5,000) on the other models with 100 images.
#   mid_seeds: mid on the authors' checkpoint (seeds 0-2) and with defense seeds 1 and 2 on the other three models.
#   confirm: mid (seeds 0-2) and the default (seed 0) on models trained afterwards: confirm/'s CIFAR-10 Blend and
#            Trojan WM trained with seed 1.
cd /work/main
export OMP_NUM_THREADS=1
P=".venv/bin/python benchmarks/compare_presets.py"
R="--rounds 3 --threads 1 --out docs/measurements/issue19/stop49"
cifar() {  # MODEL_DIR NPZ TAG CONFIGS... (100 clean images)
  for c in "${@:4}"; do
    $P "$c" --task cifar --npz ../shared/data/$2.npz --model $1/model.safetensors --trigger $1/trigger.json \
        --clean-size 100 --tag $3_c100 --seeds ${SEEDS:-0} $R
  done
}
authors() {  # CONFIGS... (100 clean images)
  for c in "$@"; do
    $P "$c" --task authors --npz ../shared/data/cifar10.npz --model ../shared/models/badnets_8_02_ckpt.pth \
        --clean-size 100 --tag c100 --seeds ${SEEDS:-0} $R
  done
}
C=docs/measurements/issue17/cifar/models
G=docs/measurements/issue17/gtsrb/models
BLEND=$C/train-blend-r0.2-s0-f0da0bc7 TROJAN_WM=$C/train-trojan_wm-r0.2-s0-858c1b02 GTSRB_BADNETS=$G/train-badnets-r0.2-s0-9f1ae56f
CR="cr=default,outer_augment=crop,outer_augment_until=5000"
FTC="ftc=default,solver_iters=0,patch_threshold=0"
MID="mid=default,outer_lr_size=5000,outer_lr_size_cap=7.07e-3,clean_distill=1,clean_distill_size=100,clean_distill_until=5000"
case $1 in
  augment) authors "$CR" "fc=default,outer_augment=flip_crop,outer_augment_until=5000"
           cifar $BLEND cifar10 blend "$CR"; cifar $GTSRB_BADNETS gtsrb gtsrb_badnets "$CR"
           cifar $TROJAN_WM cifar10 trojan_wm "d15=default" "$CR" ;;
  sgd) authors "sgd1=default,outer_optimizer=sgd,outer_lr=0.01" ;;
  control) authors "$FTC"; cifar $BLEND cifar10 blend "$FTC" ;;
  mid) cifar $TROJAN_WM cifar10 trojan_wm "$MID"; cifar $BLEND cifar10 blend "$MID"
       cifar $GTSRB_BADNETS gtsrb gtsrb_badnets "$MID" ;;
  mid_seeds) SEEDS="0 1 2" authors "$MID"
             for m in "$TROJAN_WM cifar10 trojan_wm" "$BLEND cifar10 blend" "$GTSRB_BADNETS gtsrb gtsrb_badnets"; do
               SEEDS="1 2" cifar $m "$MID"
             done ;;
  confirm) F=docs/measurements/issue19/confirm/cifar/models
           for m in "$F/train-trojan_wm-r0.2-s1-e2494deb cifar10 trojan_wm_s1" "$F/train-blend-r0.2-s1-8147e97b cifar10 blend_s1"; do
             SEEDS="0 1 2" cifar $m "$MID"; cifar $m "d15=default"
           done ;;
  *) echo "usage: $0 augment|sgd|control|mid|mid_seeds|confirm" >&2; exit 2 ;;
esac
