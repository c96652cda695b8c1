#!/bin/bash
# Issue 19 part 3, stop 45: which part of b2r2n100s3f costs digits GroupNorm-100 its accuracy (split 0: 98.49 ->
# 92.9)? The same run without the smooth δ (b2r2n100), and the ℓ2 bound of 100 alone (n100), splits 0-2, batch 100
# as in d15b100; one process at a time, one thread, beside the two grid lanes (seconds are no timings).
cd /work/main
export OMP_NUM_THREADS=1
O="--task digits --arch dp:small_vgg --clean-size 100 --rounds 5 --threads 1 --out docs/measurements/issue19/stop45"
for s in 0 1 2; do
  .venv/bin/python benchmarks/compare_presets.py "b2r2n100=default,norm=l2,norm_bound=100,bounded_search=10,per_delta_optimizer=true,inner_restarts=2,batch_size=100" $O --split-seed $s --seeds $s
  .venv/bin/python benchmarks/compare_presets.py "n100=default,norm=l2,norm_bound=100,batch_size=100" $O --split-seed $s --seeds $s
done
