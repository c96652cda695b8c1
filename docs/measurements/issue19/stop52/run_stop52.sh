#!/bin/bash
# Issue 19 part 3, stop 52: is keeping round 1's stamp (patch_rounds=kept, stop 51's candidate) confirmed where it
# was not chosen, and harmless where the default already works? One thread, one run at a time.
# Usage: run_stop52.sh STREAM
#   confirm: GTSRB Trojan WM model seed 1 (trained here, after the choice on issue 17's model seed 0), the default and
#            kept side by side, 5 rounds, 3 defense seeds (docs/measurements/issue19/confirm/kept_gtsrb.json; the
#            default's job ids are confirm_default_gtsrb's).
#   authors: the authors' checkpoint, 5,000 clean images, where round 1's stamp is found and the later rounds find
#            none: does stamping it again in rounds 2-3 cost ACC or ASR? The default and kept, seeds 0-2, 3 rounds.
cd /work/main
export OMP_NUM_THREADS=1
S=docs/measurements/issue19/stop52
case $1 in
  confirm) .venv/bin/ibau bench --preset cpu_gtsrb --suite docs/measurements/issue19/confirm/kept_gtsrb.json \
               --data-dir ../shared/data/gtsrb.npz --out docs/measurements/issue19/confirm/gtsrb --device cpu --no-report ;;
  authors) .venv/bin/python benchmarks/compare_presets.py d15=default kept=default,patch_rounds=kept --task authors \
               --npz ../shared/data/cifar10.npz --model ../shared/models/badnets_8_02_ckpt.pth \
               --seeds ${SEEDS:-0 1 2} --rounds 3 --threads 1 --out $S ;;
  *) echo "usage: $0 confirm|authors" >&2; exit 2 ;;
esac
