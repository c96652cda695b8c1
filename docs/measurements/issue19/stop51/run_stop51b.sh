#!/bin/bash
# Issue 19 part 3, stop 51 (continued from run_stop51.sh): the margin's class-8 stamp on the authors' checkpoint
# with 500 clean images (seed 0) was unlearned (81% → 8%) while the trigger kept working (31.8% ASR after 3
# rounds), as the stamp's own pattern did in stop 47. Here the stamp's mask carries noise (patch_pattern=random),
# and that also kept on every round (patch_rounds=kept). One thread, 3 rounds, compare_presets.
cd /work/main
export OMP_NUM_THREADS=1
S=docs/measurements/issue19/stop51
A="--task authors --npz ../shared/data/cifar10.npz --model ../shared/models/badnets_8_02_ckpt.pth --clean-size 500 --tag c500"
M="default,patch_search_above=36,patch_margin=0.3"
for c in "am36r=$M,patch_pattern=random" "am36rk=$M,patch_pattern=random,patch_rounds=kept"; do
  .venv/bin/python benchmarks/compare_presets.py "$c" $A --seeds ${SEEDS:-0} --rounds 3 --threads 1 --out $S
done
