#!/usr/bin/env bash
# The paper's question at its own scale on a CPU (issue 54), in stages that each resume from what they
# wrote, so the same command goes on across sessions (start it niced, in the background, from a frozen
# worktree of a commit: `git worktree add --detach DIR COMMIT`, then `nohup nice -n 19 bash
# benchmarks/paper_scale_cpu.sh >> LOG 2>&1 &`).
#   1. train PreAct ResNet-18 by N-FGSM (de Jorge et al. 2022: no catastrophic overfitting, which an
#      unrepeatable multi-hour run cannot afford), 20 epochs, bfloat16 autocast; the checkpoint lives
#      outside the work tree ($RUNS, default ~/.cache/igdefense/runs);
#   2. ship it: float16 weights into the zoo (<= 25 MB), LO-IR on all 50,000 training images;
#   3. the precision proof on it (bfloat16 crafting may evaluate it only if as strong as float32).
# The evaluations (the paper's protocol, then ours) follow once stage 3 says in which precision.
set -euo pipefail
RUNS=${RUNS:-$HOME/.cache/igdefense/runs}
IG=${IGDEFENSE:-python -m igdefense.cli}
ZOO=igdefense/zoo/weights
M=$RUNS/preact-resnet18-robust.safetensors
export OMP_NUM_THREADS=${OMP_NUM_THREADS:-2}
mkdir -p "$RUNS"
[ -f "$M" ] || $IG train --arch preact-resnet18 --robust --attack n-fgsm --epochs 20 --precision bf16 --quiet -o "$M"
[ -f "$ZOO/preact-resnet18-robust.safetensors" ] || python -c "
import sys; from igdefense.zoo.weights_file import save_half; save_half(sys.argv[1], sys.argv[2])" \
  "$M" "$ZOO/preact-resnet18-robust.safetensors"
[ -f "$ZOO/preact-resnet18-robust.lo-ir.safetensors" ] || $IG rank --model preact-resnet18-robust \
  -o "$ZOO/preact-resnet18-robust.lo-ir.safetensors"  # (all 50,000 training images, float32)
python benchmarks/precision_strength.py --model preact-resnet18-robust --work "$RUNS/precision_strength"
