#!/bin/bash
# Issue 19 part 3, stop 45: the default (d15b100: IBAUConfig() at the default's batch of 100) on the same digits
# GroupNorm-100 models as run_digits_ablation.sh (retrained here at one thread: issue 15's were trained at two and
# differ, e.g. split 1 98.49 against 98.24% before defense), so the candidate's ACC drop is compared like for like.
# (Run here as two processes, splits 0 then 2 beside split 1, with both lanes SIGSTOPped.)
cd /work/main
export OMP_NUM_THREADS=1
O="--task digits --arch dp:small_vgg --clean-size 100 --rounds 5 --threads 1 --out docs/measurements/issue19/stop45"
for s in 0 1 2; do
  .venv/bin/python benchmarks/compare_presets.py "d15b100=default,batch_size=100" $O --split-seed $s --seeds $s
done
