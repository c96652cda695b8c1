#!/bin/bash
# Issue 19 part 3, stop 51: two stamp rules, at one thread, one run at a time.
# Usage: run_stop51.sh STREAM
#   kept: does keeping the latest stamp found on the rounds that find none (patch_rounds=kept) stop the Trojan WM
#         backdoors from coming back after round 1? Development models: issue 17's CIFAR-10 Trojan WM at 0.5% poison
#         (the default: 0.0% ASR after round 1, 15.5% after round 3 on seed 0) and GTSRB Trojan WM (all three seeds
#         above 28%). The jobs go beside the default's records (same models, same clean-set draws, the same ids for
#         the default column).
#   above: the authors' checkpoint with 500 clean images, where round 1's δ gives a 49-pixel stamp to class 9 on
#          seed 0 and the class search never runs (30.7% ASR): the class search also run above 36 pixels
#          (patch_search_above=36), seeds 0-2, 3 rounds (compare_presets, as stop 50's authors500).
#   rerun: the default's jobs on the GTSRB Trojan WM model again, on this machine (issue 17's records of them ran
#          under AVX2 kernels, these under AVX512), into gtsrb_rerun/ (the model linked from issue 17's folder).
#   stamps: what the class search sees on that model with 500 clean images (benchmarks/class_stamps.py; target 8
#           marks the output only): class 8's stamp stands out below the 99.5% threshold.
#   margin: the same runs with the class search also taking a stamp by its lead (patch_margin=0.3, floor 0.8).
cd /work/main
export OMP_NUM_THREADS=1
S=docs/measurements/issue19/stop51
case $1 in
  kept) .venv/bin/ibau bench --preset cpu --suite $S/kept_cifar.json --data-dir ../shared/data/cifar10.npz \
            --out docs/measurements/issue17/cifar --device cpu --no-report
        .venv/bin/ibau bench --preset cpu_gtsrb --suite $S/kept_gtsrb.json --data-dir ../shared/data/gtsrb.npz \
            --out docs/measurements/issue17/gtsrb --device cpu --no-report ;;
  above) .venv/bin/python benchmarks/compare_presets.py "above36=default,patch_search_above=36" --task authors \
             --npz ../shared/data/cifar10.npz --model ../shared/models/badnets_8_02_ckpt.pth --clean-size 500 \
             --tag c500 --seeds ${SEEDS:-0 1 2} --rounds 3 --threads 1 --out $S ;;
  rerun) .venv/bin/ibau bench --preset cpu_gtsrb --suite $S/default_gtsrb_rerun.json --data-dir ../shared/data/gtsrb.npz \
             --out $S/gtsrb_rerun --device cpu --no-report ;;
  stamps) .venv/bin/python benchmarks/class_stamps.py --model ../shared/models/badnets_8_02_ckpt.pth --dataset npz \
              --data-dir ../shared/data/cifar10.npz --arch small_vgg --target 8 --clean-size 500 --seed 0 \
              --out $S/class_stamps_authors_c500.json ;;
  margin) .venv/bin/python benchmarks/compare_presets.py "am36=default,patch_search_above=36,patch_margin=0.3" \
              --task authors --npz ../shared/data/cifar10.npz --model ../shared/models/badnets_8_02_ckpt.pth \
              --clean-size 500 --tag c500 --seeds ${SEEDS:-0 1 2} --rounds 3 --threads 1 --out $S ;;
  *) echo "usage: $0 kept|above|rerun|stamps|margin" >&2; exit 2 ;;
esac
