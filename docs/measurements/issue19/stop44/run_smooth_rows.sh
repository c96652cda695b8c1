#!/bin/bash
# Issue 19 part 3, stop 44: the smooth δ (b2r2n100s3: no guard, no probe) on other development rows, where it must do no harm; seed 0, two runs side
# by side (one thread each), both lanes SIGSTOPped. Usage: run_smooth_rows.sh gtsrb | cifar
cd /work/main
export OMP_NUM_THREADS=1
C="b2r2n100s3=default,norm=l2,norm_bound=100,bounded_search=10,per_delta_optimizer=true,inner_restarts=2,smooth_search=3"
O="--rounds 5 --threads 1 --seeds 0 --out docs/measurements/issue19/stop44"
run() {  # the model folder, the npz, the tag
  .venv/bin/python benchmarks/compare_presets.py "$C" --task cifar --npz $2 --model $1/model.safetensors \
      --trigger $1/trigger.json --tag $3 $O
}
if [ "$1" = gtsrb ]; then
  G=docs/measurements/issue17/gtsrb/models
  run $G/train-blend-r0.2-s0-f46c2426 ../shared/data/gtsrb.npz gtsrb_blend &
  run $G/train-l2_inv-r0.2-s0-4d6a05cc ../shared/data/gtsrb.npz gtsrb_l2inv &
else
  .venv/bin/python benchmarks/compare_presets.py "$C" --task authors --npz ../shared/data/cifar10.npz \
      --model ../shared/models/badnets_8_02_ckpt.pth $O &
  run docs/measurements/issue17/cifar/models/train-trojan_wm-r0.2-s0-858c1b02 ../shared/data/cifar10.npz cifar_trojan_wm &
fi
wait
