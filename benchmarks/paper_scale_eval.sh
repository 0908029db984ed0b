#!/usr/bin/env bash
# Issue 54, after benchmarks/paper_scale_cpu.sh has trained and shipped the paper-scale PreAct ResNet-18
# (its float16 weights, LO-IR rankings and the paper's setting, k = 50 of 512 and sigma 4/255, in the
# zoo): the paper's question on up to 1,000 test images, at 8/255. Each stage is one `igdefense eval`
# that resumes from its logs, so the same command goes on across sessions (start it niced, in the
# background, from a frozen worktree of a commit that holds the weights: `git worktree add --detach DIR
# COMMIT`, then `nohup nice -n 19 bash benchmarks/paper_scale_eval.sh >> LOG 2>&1 &`). The images come
# round robin over the classes, so every multiple of 100 images is class-balanced: an interim answer,
# labelled so by its image count, that the same logs extend to 1,000. Batches of 25 images: the costliest
# attack on one batch (AutoAttack-rand on IG-Defense) ends within a session. Each stage's first batch
# gives its time per batch: the CPU-hour estimate for the rest.
#   1. ours: base and IG-Defense in the paper's setting through the cascade (transfer, the defense's
#      adaptive attack, AutoAttack, APGD-CE-EOT, RayS), every example scored over 9 draws;
#   2. the paper's protocol: AutoAttack standard alone on the base and on IG-Defense, one draw;
#   3. ours' random-mask control, and the sanity checks (on the first 100 images);
#   4. ours at sigma 8/255 (the setting that gained on smallcnn-refined);
#   5. the paper's protocol's AutoAttack-rand (EOT-20 on IG-Defense: the costliest stage, so the last), in
#      a folder of its own: a log binds to its attack order, so the standard stage, extended again at the
#      next N, could not resume a log that also names autoattack-rand.
# Ours is screened (--screen, the sweep's rule): a defended model that the attacks so far leave no way to
# beat the base's worst case is attacked no further, and its worst case is reported as an upper bound;
# checked again with every batch, so a model that might gain after all gets the rest of the cascade.
# Cost, measured here (2 AMD EPYC cores, AVX2): AutoAttack on the base, 25 images, 28 min of the whole
# CPU, 320x one H200; unscreened, the five stages come to about 420 CPU-hours for 1,000 images.
# The stages grow together, 100 images at a time (each run extends its logs by four batches of 25), so
# a cut leaves them on nearly the same images; the first answers the question first. Attacks are crafted
# in float32 (PRECISION=fp32, the default): bfloat16 only with PRECISION=bf16, and only once the
# precision proof on this model is committed and says it is as strong. A log binds to its precision,
# so a run keeps the one it began in. Beside another background job on two cores give each job one thread
# (OMP_NUM_THREADS=1): two jobs of two threads each make 0.58x the attack steps of two jobs of one thread each
# (benchmarks/results/background_threads.json), and two one-thread jobs 1.26x one two-thread job. So on two
# cores run it as two lanes of one thread each, in two worktrees or one: LANE=ours (stages 1, 3, 4) and
# LANE=paper (stages 2, 5); they write to different folders, and a base model's examples one lane made
# the other reads from the adversarial cache. LANE=all (the default) runs every stage in turn.
set -euo pipefail
IG=${IGDEFENSE:-python -m igdefense.cli}
R=benchmarks/results
export OMP_NUM_THREADS=${OMP_NUM_THREADS:-2} PYTHONPATH=$PWD  # (this worktree's igdefense, not the editable install's)
PRECISION=${PRECISION:-fp32}
if [ "$PRECISION" != fp32 ]; then
  PROOF=$R/precision_strength-preact-resnet18-robust.json
  python -c "import json, sys; sys.exit(not json.load(open(sys.argv[1]))['bf16_as_strong'])" "$PROOF" 2>/dev/null ||
    { echo "PRECISION=$PRECISION needs $PROOF committed and saying bf16 is as strong: use PRECISION=fp32" >&2; exit 2; }
fi
OURS=$R/eval_preact-resnet18-robust-cpu PAPER=$R/paper_protocol_preact-resnet18-robust PAPER_RAND=$R/paper_protocol_preact-resnet18-robust-rand
LANE=${LANE:-all}
case $LANE in all|ours|paper) ;; *) echo "LANE=$LANE: use all, ours or paper" >&2; exit 2;; esac
stage() {  # stage LANE ARGS...: `igdefense eval` with ARGS if this run's lane holds it
  local lane=$1; shift
  if [ "$LANE" = all ] || [ "$LANE" = "$lane" ]; then $IG eval $M "$@"; fi
}
for N in 100 200 300 400 500 600 700 800 900 1000; do
  M="--model preact-resnet18-robust --images $N --order round-robin --batch-size 25 --precision $PRECISION"
  stage ours --cascade --screen --out $OURS
  stage paper --attacks autoattack --draws 1 --out $PAPER
  stage ours --cascade --screen --random-mask --sanity --out $OURS
  stage ours --sigma 8/255 --cascade --screen --out $OURS-sigma8
  stage paper --attacks autoattack-rand --draws 1 --out $PAPER_RAND
done
