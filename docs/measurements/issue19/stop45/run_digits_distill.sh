#!/bin/bash
# Issue 19 part 3, stop 45: does distillation from the handed-over model on the plain rows (clean_distill=1, stop
# 43's option) keep the default's accuracy on digits GroupNorm with 100 clean images, where it loses 2.3-3.0
# points on these models? Splits 0-2, batch 100, one process, one thread, beside the two grid lanes.
cd /work/main
export OMP_NUM_THREADS=1
O="--task digits --arch dp:small_vgg --clean-size 100 --rounds 5 --threads 1 --out docs/measurements/issue19/stop45"
for s in 0 2 1; do
  .venv/bin/python benchmarks/compare_presets.py "d15b100d1=default,batch_size=100,clean_distill=1" $O --split-seed $s --seeds $s
done
