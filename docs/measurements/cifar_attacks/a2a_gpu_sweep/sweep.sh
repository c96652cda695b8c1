#!/bin/bash
# GPU sweep of I-BAU outer-step settings on the all-to-all models; one metrics JSON per run under $OUT.
export PYTHONPATH=src OMP_NUM_THREADS=${THREADS:-2}
nvidia-smi --query-gpu=name --format=csv,noheader > $OUT/gpu.txt
python -c "import torch;print(torch.__version__, torch.cuda.is_available())" >> $OUT/gpu.txt
one() {  # model setting rounds method options...
  m=$1; s=$2; r=$3; meth=$4; shift 4
  opts=(); for o in "$@"; do opts+=(--defense-option "$o"); done
  rr=(); [ "$meth" = ibau ] && rr=(--rounds $r)
  start=$SECONDS
  python -m ibau defend --model .devdata/a2a/$m/model.safetensors --dataset npz --data-dir .devdata/cifar_test.npz \
    --clean-size 5000 --method $meth "${rr[@]}" "${opts[@]}" --device ${DEV:-cuda} --no-progress --out /tmp/r/${m}_$s \
    > $OUT/${m}_$s.log 2>&1
  cp /tmp/r/${m}_$s/metrics.json $OUT/${m}_$s.json 2>/dev/null
  echo "$m $s $((SECONDS-start))" >> $OUT/times.txt
}
export -f one
if [ -n "$JOBS" ]; then cp "$JOBS" /tmp/jobs; else cat > /tmp/jobs <<J
p5 base 12 ibau perturb_fraction=0.2
p5 pf05_lr2e4 15 ibau perturb_fraction=0.5 outer_lr=2e-4
p5 pf05_lr5e4 15 ibau perturb_fraction=0.5 outer_lr=5e-4
p5 pf03_lr5e4 15 ibau perturb_fraction=0.3 outer_lr=5e-4
p5 pf1_lr2e4 15 ibau perturb_fraction=1.0 outer_lr=2e-4
p5 pf1_lr1e4 15 ibau perturb_fraction=1.0 outer_lr=1e-4
p5 sgd_pf05_1e2 15 ibau perturb_fraction=0.5 outer_optimizer=sgd outer_lr=0.01
p5 ft_lr1e3 0 finetune lr=1e-3
p4 base 12 ibau perturb_fraction=0.2
p4 pf05_lr2e4 15 ibau perturb_fraction=0.5 outer_lr=2e-4
p4 pf05_lr5e4 15 ibau perturb_fraction=0.5 outer_lr=5e-4
p4 pf03_lr5e4 15 ibau perturb_fraction=0.3 outer_lr=5e-4
p4 pf1_lr2e4 15 ibau perturb_fraction=1.0 outer_lr=2e-4
p4 pf1_lr1e4 15 ibau perturb_fraction=1.0 outer_lr=1e-4
p4 sgd_pf05_1e2 15 ibau perturb_fraction=0.5 outer_optimizer=sgd outer_lr=0.01
p4 ft_lr1e3 0 finetune lr=1e-3
rerun base 12 ibau perturb_fraction=0.2
rerun pf05_lr2e4 15 ibau perturb_fraction=0.5 outer_lr=2e-4
rerun pf05_lr5e4 15 ibau perturb_fraction=0.5 outer_lr=5e-4
rerun pf03_lr5e4 15 ibau perturb_fraction=0.3 outer_lr=5e-4
rerun pf1_lr2e4 15 ibau perturb_fraction=1.0 outer_lr=2e-4
rerun pf1_lr1e4 15 ibau perturb_fraction=1.0 outer_lr=1e-4
rerun sgd_pf05_1e2 15 ibau perturb_fraction=0.5 outer_optimizer=sgd outer_lr=0.01
rerun ft_lr1e3 0 finetune lr=1e-3
p5 pf02_lr5e4 15 ibau perturb_fraction=0.2 outer_lr=5e-4
p4 pf02_lr5e4 15 ibau perturb_fraction=0.2 outer_lr=5e-4
rerun pf02_lr5e4 15 ibau perturb_fraction=0.2 outer_lr=5e-4
p5 sgd_pf1_3e2 15 ibau perturb_fraction=1.0 outer_optimizer=sgd outer_lr=0.03
p4 sgd_pf1_3e2 15 ibau perturb_fraction=1.0 outer_optimizer=sgd outer_lr=0.03
rerun sgd_pf1_3e2 15 ibau perturb_fraction=1.0 outer_optimizer=sgd outer_lr=0.03
J
fi
timeout ${BUDGET:-420} bash -c 'xargs -P ${PAR:-8} -L 1 bash -c '"'"'one "$@"'"'"' _ < /tmp/jobs'
echo done >> $OUT/times.txt
