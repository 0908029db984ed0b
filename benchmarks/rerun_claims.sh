#!/usr/bin/env bash
# The committed robustness claims, re-run with scoring over draws and IG-Defense's own adaptive attack
# (the defaults of `igdefense eval` since 0.2). Each run resumes from its logs if cut; run this again.
#   OMP_NUM_THREADS=2 nohup bash benchmarks/rerun_claims.sh > runs/rerun_claims.log 2>&1 &
#   CLAIMS="2 3 4" bash benchmarks/rerun_claims.sh    (only those; default: all four, in order)
# IGDEFENSE="python -m igdefense.cli" with PYTHONPATH=<a checkout> runs that checkout's code (a frozen
# copy keeps a run of many hours on one version while the working tree changes).
set -euo pipefail
# Batches of 100 images: a run cut between sessions loses at most one attack on 100 images.
R=benchmarks/results
IG=${IGDEFENSE:-igdefense}
for claim in ${CLAIMS:-1 2 3 4}; do
  case $claim in
    1) $IG eval --batch-size 100 --model smallcnn-refined --sigma 8/255 --images 1000 --cascade --sanity \
         --out $R/eval_smallcnn-refined-sigma8-draws ;;
    2) $IG eval --batch-size 100 --model smallcnn-robust --images 1000 --cascade --random-mask --sanity \
         --out $R/eval_smallcnn-robust-draws ;;
    # smallcnn-robust's best setting in its sweep (k=2% of 128 neurons: 3; sigma 4/255), on the sweep's 500 images
    3) $IG eval --batch-size 100 --model smallcnn-robust --k 3 --images 500 --cascade \
         --out $R/eval_smallcnn-robust-k3-draws ;;
    # a second seed of the first claim (its attacks' random starts and the noise draws)
    4) $IG eval --batch-size 100 --model smallcnn-refined --sigma 8/255 --images 1000 --cascade --seed 1 \
         --out $R/eval_smallcnn-refined-sigma8-draws-seed1 ;;
    *) echo "rerun_claims.sh: no claim $claim (1-4)" >&2; exit 2 ;;
  esac
done
