#!/usr/bin/env bash
# The paper's claim at its own scale (issue 40): a robust PreAct ResNet-18 trained by FGSM-RS (Wong et
# al. 2020: eps 8/255, step 10/255, one-cycle LR, 15 epochs), its clean and PGD-10 accuracy on 1,000
# test images, LO-IR on the whole training split, then base vs IG-Defense through the full cascade
# (scoring over 9 draws, the mask-aware adaptive attack, the sanity checks), at the paper's setting
# (k = 10% of 512, sigma 4/255) and at the smallcnn sweep's best sigma (8/255).
#   on a GPU machine:  bash benchmarks/paper_scale.sh               (IMAGES=500 by default)
#   on a CPU (CI):     SIZE=tiny bash benchmarks/paper_scale.sh     (the same commands at toy sizes,
#                      cheap attacks and no sanity checks: it tests the script, it measures nothing)
# Every step resumes from what it wrote (the training checkpoint, the rankings, the evaluation logs).
# The weights (45 MB) stay out of git: rebuild them with the train line below, on any device.
set -euo pipefail
R=${RESULTS:-benchmarks/results}
W=${WEIGHTS:-runs}
IG=${IGDEFENSE:-igdefense}
M=$W/preact-resnet18-robust.safetensors
if [ "${SIZE:-full}" = tiny ]; then
  TRAIN=(--epochs 1 --per-class 3); RANK=(--per-class 2); CHECK=4; N=4
  ATTACKS=(--attacks fgsm,transfer --draws 3 --batch-size 4); SANITY=()
else
  TRAIN=(--epochs 15); RANK=(); CHECK=1000; N=${IMAGES:-500}
  ATTACKS=(); SANITY=(--sanity --sanity-n 100)
fi
mkdir -p "$W" "$R"
# (skipped once the weights exist: retrained weights differ, and the evaluations' logs are bound to them)
[ -f "$M" ] || $IG train --arch preact-resnet18 --robust "${TRAIN[@]}" --quiet -o "$M" 2>&1 \
  | tee "$R/train_preact-resnet18-robust.log"
[ -f "$M.lo-ir.safetensors" ] || $IG rank --model "$M" "${RANK[@]}" -o "$M.lo-ir.safetensors"
# the goal of the training: clean >= 80%, PGD-10 >= 45% (the base row of this report)
$IG eval --model "$M" --rankings "$M.lo-ir.safetensors" --attacks pgd --images $CHECK \
  --out "$R/eval_preact-resnet18-robust-pgd10"
$IG eval --model "$M" --rankings "$M.lo-ir.safetensors" --images $N --cascade "${ATTACKS[@]}" "${SANITY[@]}" \
  --out "$R/eval_preact-resnet18-robust"
$IG eval --model "$M" --rankings "$M.lo-ir.safetensors" --sigma 8/255 --images $N --cascade "${ATTACKS[@]}" \
  --out "$R/eval_preact-resnet18-robust-sigma8"
