#!/bin/bash
# Issue 19 part 3, stop 46: a configuration on the digits GroupNorm-100 models of stop 45 (copied from
# docs/measurements/issue19/stop45/digits, trained at one thread), 5 rounds, batch 100, one split per process.
# Usage: run_digits.sh "NAME=default,batch_size=100,..." SPLIT [SPLIT...]   (both lanes SIGSTOPped)
cd /work/main
export OMP_NUM_THREADS=1
O="--task digits --arch dp:small_vgg --clean-size 100 --rounds 5 --threads 1 --out docs/measurements/issue19/stop46"
c=$1; shift
for s in "$@"; do
  .venv/bin/python benchmarks/compare_presets.py "$c" $O --split-seed $s --seeds $s
done
