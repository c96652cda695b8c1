#!/bin/bash
# Issue 19 part 3, stop 45: the default with clean_distill=1 on the authors' BadNets checkpoint, 3 rounds, seed 0,
# beside issue 15's d15 record of the same model and seed (docs/measurements/issue15/screen): does the anchor that
# keeps digits' accuracy cost removal on the model the default was chosen on? One thread, the GTSRB lane SIGSTOPped.
cd /work/main
export OMP_NUM_THREADS=1
.venv/bin/python benchmarks/compare_presets.py "d15d1=default,clean_distill=1" --task authors --npz ../shared/data/cifar10.npz \
    --model ../shared/models/badnets_8_02_ckpt.pth --rounds 3 --seeds 0 --threads 1 --out docs/measurements/issue19/stop45
