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
  ATTACKS=(--attacks fgsm,transfer --draws 3); SANITY=(); BATCH=(--batch-size 4)
else
  TRAIN=(--epochs 15); RANK=(); CHECK=1000; N=${IMAGES:-500}
  ATTACKS=(); SANITY=(--sanity --sanity-n 100)
  BATCH=(--batch-size ${BATCH_SIZE:-500})  # one batch: a cut run keeps every finished attack on all images
fi
mkdir -p "$W" "$R"
# (skipped once the weights exist: retrained weights differ, and the evaluations' logs are bound to them)
[ -f "$M" ] || $IG train --arch preact-resnet18 --robust "${TRAIN[@]}" --quiet -o "$M" 2>&1 \
  | tee "$R/train_preact-resnet18-robust.log"
[ -f "$M.lo-ir.safetensors" ] || $IG rank --model "$M" "${RANK[@]}" -o "$M.lo-ir.safetensors"
# The three evaluations share the GPU (none of them fills it): PGD-10, the goal of the training (clean
# >= 80%, PGD-10 >= 45%: the base row of its report), and the cascade at each sigma. Each resumes from its log.
$IG eval --model "$M" --rankings "$M.lo-ir.safetensors" --attacks pgd --images $CHECK "${BATCH[@]}" \
  --out "$R/eval_preact-resnet18-robust-pgd10" >> "$R/eval_preact-resnet18-robust-pgd10.log" 2>&1 & pgd=$!
$IG eval --model "$M" --rankings "$M.lo-ir.safetensors" --images $N --cascade "${ATTACKS[@]}" "${SANITY[@]}" \
  "${BATCH[@]}" --out "$R/eval_preact-resnet18-robust" >> "$R/eval_preact-resnet18-robust.log" 2>&1 & sigma4=$!
$IG eval --model "$M" --rankings "$M.lo-ir.safetensors" --sigma 8/255 --images $N --cascade "${ATTACKS[@]}" \
  "${BATCH[@]}" --out "$R/eval_preact-resnet18-robust-sigma8" >> "$R/eval_preact-resnet18-robust-sigma8.log" 2>&1 & sigma8=$!
status=0
for job in pgd sigma4 sigma8; do
  wait ${!job} || { status=$?; echo "paper_scale.sh: the $job evaluation ended with exit $status (its log: $R/*.log)"; }
done
exit $status
