#!/bin/bash
# Issue 19 part 3, stop 53: the class that stands out by ‖δ‖₁ on the development GTSRB Trojan WM model (issue 17's
# model seed 0), at one thread, under AVX2 kernels (as issue 17's default column).
# Usage: run_stop53.sh STREAM
#   stamps: what the class search sees with stamps beyond the default's cap (benchmarks/class_stamps.py --sizes;
#           target 2 marks the output only).
#   l1:     patch_pick=l1, and the same with patch_rounds=kept, beside the default's records in issue 17's folder.
#   avx2:   the default and patch_rounds=kept again on this machine under the same kernels, into gtsrb_avx2/ (the
#           models linked from issue 17's folder): the controls of the l1 columns.
cd /work/main
export OMP_NUM_THREADS=1 ATEN_CPU_CAPABILITY=avx2
S=docs/measurements/issue19/stop53
G="--preset cpu_gtsrb --data-dir ../shared/data/gtsrb.npz --device cpu --no-report"
case $1 in
  stamps) .venv/bin/python benchmarks/class_stamps.py \
              --model docs/measurements/issue17/gtsrb/models/train-trojan_wm-r0.2-s0-418b8954/model.safetensors \
              --dataset gtsrb --data-dir ../shared/data/gtsrb.npz --target 2 --sizes 16,36,64,100,144,196,256 \
              --out $S/class_stamps_gtsrb_trojan_wm.json ;;
  l1) .venv/bin/ibau bench --suite $S/l1_gtsrb.json --out docs/measurements/issue17/gtsrb $G
      .venv/bin/ibau bench --suite $S/l1kept_gtsrb.json --out docs/measurements/issue17/gtsrb $G ;;
  avx2) .venv/bin/ibau bench --suite $S/kept_gtsrb_avx2.json --out $S/gtsrb_avx2 $G ;;
  *) echo "usage: $0 stamps|l1|avx2" >&2; exit 2 ;;
esac
