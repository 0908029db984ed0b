#!/usr/bin/env bash
# Issue 54, after benchmarks/paper_scale_cpu.sh has trained, shipped and proven the precision of the
# paper-scale PreAct ResNet-18 (its float16 weights, LO-IR rankings and the paper's setting, k = 50 of
# 512 and sigma 4/255, in the zoo; benchmarks/results/precision_strength-preact-resnet18-robust.json
# committed): the paper's question on 500, then 1,000 test images, at 8/255. Each stage is one
# `igdefense eval` that resumes from its logs, so the same command goes on across sessions (start it
# niced, in the background, from a frozen worktree of a commit that holds the weights: `git worktree
# add --detach DIR COMMIT`, then `nohup nice -n 19 bash benchmarks/paper_scale_eval.sh >> LOG 2>&1 &`).
# The images come round robin over the classes, so every stage first answers on 500 images (an interim
# answer, labelled so by its image count) and then goes on, batch by batch in the same log, to 1,000.
# Each stage's first batch gives its time per batch: the CPU-hour estimate for the rest.
#   1. the paper's protocol: AutoAttack standard and AutoAttack-rand on the base model and on
#      IG-Defense in the paper's setting, each example under one draw;
#   2. ours: the cascade (transfer, the defense's adaptive attack, AutoAttack, APGD-CE-EOT, RayS),
#      every example scored over 9 draws, with the random-mask control and the sanity checks;
#   3. the same at sigma 8/255 (the setting that gained on smallcnn-refined).
# Attacks are crafted in bfloat16 only if the precision proof says it is as strong on this model.
set -euo pipefail
IG=${IGDEFENSE:-python -m igdefense.cli}
R=benchmarks/results
export OMP_NUM_THREADS=${OMP_NUM_THREADS:-2} PYTHONPATH=$PWD  # (this worktree's igdefense, not the editable install's)
PROOF=$R/precision_strength-preact-resnet18-robust.json
[ -f "$PROOF" ] || { echo "no $PROOF: run benchmarks/precision_strength.py on the model and commit what it wrote" >&2; exit 2; }
PRECISION=$(python -c "import json, sys; print('bf16' if json.load(open(sys.argv[1]))['bf16_as_strong'] else 'fp32')" "$PROOF")
for N in 500 1000; do
  M="--model preact-resnet18-robust --images $N --order round-robin --batch-size 100 --precision $PRECISION"
  $IG eval $M --attacks autoattack,autoattack-rand --draws 1 --out $R/paper_protocol_preact-resnet18-robust
  $IG eval $M --cascade --random-mask --sanity --out $R/eval_preact-resnet18-robust-cpu
  $IG eval $M --sigma 8/255 --cascade --out $R/eval_preact-resnet18-robust-cpu-sigma8
done
