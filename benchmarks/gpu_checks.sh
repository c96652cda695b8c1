#!/bin/bash
# The GPU measurements of issues 19 and 20, in one call of a GPU machine (docs/scale.md gives the results):
#   1. peak GPU memory and seconds per θ step of `unlearn` on ResNet-50 at 224×224, batch 64 (issue 20 §4);
#   2. one I-BAU round against a fine-tuning epoch, float32 and the bfloat16/channels-last options, with
#      images/s and peak memory, on a small VGG BadNets model and on an untrained PreActResNet-18 (§3);
#   3. time to effect of I-BAU and of the defenses that beat it elsewhere (ANP, SAU, FT-SAM) beside FP, NAD
#      and fine-tuning, on the same model (issue 19 part 3's speed target).
# Each step has its own time limit, so the call ends with everything finished so far under OUT, and each
# defense runs in its own process: one that fails leaves the others' records.
#
#   bash benchmarks/gpu_checks.sh CIFAR_NPZ MODEL OUT
#
# CIFAR_NPZ needs only the test split (and one training row): the defender's 5,000 images and the held-out
# rest. MODEL is a BadNets → 8 model (safetensors and its card).
set -u
DATA=${1:?an npz holding the CIFAR-10 test split}
MODEL=${2:?a BadNets model (safetensors + card)}
OUT=${3:?an output folder}
export PYTHONPATH=src PYTHONUNBUFFERED=1
mkdir -p "$OUT/tte"
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader
python3 -c "import torch; print('torch', torch.__version__, torch.cuda.get_device_name())"

echo "== memory at scale"
timeout 60 python3 benchmarks/memory_scale.py --device cuda --batch-size 64 --clean-size 128 \
    --out "$OUT/memory_scale_gpu.json"
echo "== round time, small VGG"
timeout 60 python3 benchmarks/round_time.py --npz "$DATA" --model "$MODEL" --device cuda --out "$OUT/round_time_gpu_vgg.json" \
    default=default bf16=default,precision=bfloat16 cl=default,channels_last=true fast=fast
echo "== round time, PreActResNet-18 (untrained)"
timeout 40 python3 benchmarks/round_time.py --npz "$DATA" --arch preact_resnet18 --device cuda \
    --out "$OUT/round_time_gpu_preact18.json" default=default fast=fast
# seconds each defense may take, data loading included. On an H200 with the authors' model FT-SAM's 100
# epochs and SAU's 100 rounds outlast 60 and 140 s (each was cut there once: no record), so they get more;
# the whole script then needs up to 10 minutes.
for pair in ibau:30 anp:45 ft_sam:100 fine_pruning:20 nad:40 finetune:15 sau:180; do
    method=${pair%:*}
    echo "== time to effect: $method"
    timeout "${pair#*:}" python3 benchmarks/time_to_effect.py --npz "$DATA" --model "$MODEL" --device cuda \
        --no-progress --out "$OUT/tte" --methods "$method" | grep -v '^|'
done
python3 benchmarks/time_to_effect.py --npz "$DATA" --model "$MODEL" --out "$OUT/tte" \
    --methods $(ls "$OUT/tte" | sed -n 's/\.json$//p')
