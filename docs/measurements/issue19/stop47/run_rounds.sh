#!/bin/bash
# Issue 19 part 3, stop 47: does the default fail the authors' checkpoint with 500 clean images (30.7% ASR after 3
# rounds) for want of rounds? d15 with 5 and 10 rounds (the cosine spread over them), seed 0, one thread, beside the
# lanes: seconds are no timings. Records in stop47_rounds/.
cd /work/main
export OMP_NUM_THREADS=1
for r in 5 10; do
  .venv/bin/python benchmarks/compare_presets.py "d15=default" --task authors --npz ../shared/data/cifar10.npz \
      --model ../shared/models/badnets_8_02_ckpt.pth --clean-size 500 --tag c500_r$r --rounds $r --seeds 0 --threads 1 \
      --out docs/measurements/issue19/stop47_rounds
done
