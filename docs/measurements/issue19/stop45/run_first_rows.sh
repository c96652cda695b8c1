#!/bin/bash
# Issue 19 part 3, stop 45: the candidate b2r2n100s3f (smooth_rounds="first") on the development rows it had not
# run: GTSRB Trojan WM (defense seed 2), GTSRB Smooth, CPU CIFAR-10 BadNets, digits GroupNorm with 100 clean
# images. Two runs side by side (one thread each), both lanes SIGSTOPped. Usage: run_first_rows.sh gtsrb | other
cd /work/main
export OMP_NUM_THREADS=1
F="b2r2n100s3f=default,norm=l2,norm_bound=100,bounded_search=10,per_delta_optimizer=true,inner_restarts=2,smooth_search=3,smooth_rounds=first"
O="--rounds 5 --threads 1 --out docs/measurements/issue19/stop45"
run() {  # the model folder, the npz, the tag, the seed
  .venv/bin/python benchmarks/compare_presets.py "$F" --task cifar --npz $2 --model $1/model.safetensors \
      --trigger $1/trigger.json --tag $3 --seeds $4 $O
}
G=docs/measurements/issue17/gtsrb/models
C=docs/measurements/issue17/cifar/models
if [ "$1" = gtsrb ]; then
  run $G/train-trojan_wm-r0.2-s0-418b8954 ../shared/data/gtsrb.npz gtsrb_trojan_wm 2 &
  run $G/train-smooth-r0.2-s0-f2c18273 ../shared/data/gtsrb.npz gtsrb_smooth 0 &
else
  run $C/train-badnets-r0.2-s0-b4417bd7 ../shared/data/cifar10.npz cifar_badnets 0 &
  for s in 0 1 2; do
    .venv/bin/python benchmarks/compare_presets.py "$F,batch_size=100" --task digits --arch dp:small_vgg \
        --clean-size 100 --split-seed $s --seeds $s $O
  done &
fi
wait
