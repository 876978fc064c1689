#!/bin/bash
# Step 1 of the fourth protocol (experiments/README.md): which task variant becomes the default, on validation only.
# Runs each candidate's stages up to M_PIT's rounds (no control, no judge, no evaluate: no test number exists), in
# the order given, and stops at the first that passes the rule fixed before the runs.
#   bash experiments/default/task.sh runs_dir "name override..." ...   (about 6 min per candidate on 2 cores)
# Step 1b, the candidates after step 1 (which is in experiments/README.md with its candidates and result):
#   bash experiments/default/task.sh multirun/default4 "slip_prob_0.7 dataset.slip_prob=0.7" \
#     "slip_prob_0.75 dataset.slip_prob=0.75"
set -euo pipefail
set -f   # overrides such as dataset.slips=[echo,cut] are not globs
cd "$(dirname "$0")/../.."
source experiments/default/job.sh
RUNS=$1
shift
PY=${PY:-.venv/bin/python}
STAGES="objective.stages=[sft_policy,reward,rlhf_policy,sft_pit,gap_reward,pit_rl]"

for candidate in "$@"; do
  set -- $candidate
  name=$1
  shift
  for seed in 0 1 2; do
    (export OMP_NUM_THREADS=1 PIT_CACHE_DIR="$RUNS/cache-$seed"
     run_job "$RUNS/task/$name/seed$seed" seed="$seed" "$STAGES" "$@") &
  done
  wait
  "$PY" - "$RUNS/task/$name" <<'PY' && exit 0   # the first candidate that passes is the task; later ones do not run
import json, sys
from pathlib import Path
from statistics import mean
runs = [json.loads((Path(sys.argv[1]) / f"seed{s}" / "results.json").read_text())["stages"] for s in (0, 1, 2)]
m_p = [r["rlhf_policy"]["metrics"]["val_oracle"] for r in runs]
first, last = ([r[stage]["metrics"] for r in runs] for stage in ("pit_rl/1_dataset", "pit_rl/2_policy"))
sft = [f["val_draft_oracle_start"] - f["val_draft_oracle_reference_start"] for f in first]
lift = [m["val_draft_oracle"] - m["val_draft_oracle_reference"] for m in last]
passed = max(m_p) <= 0.70 and mean(lift) >= 0.15
print(f"{Path(sys.argv[1]).name}: M_P val oracle after RLHF {' / '.join(f'{v:.3f}' for v in m_p)} (every seed <= 0.70);"
      f" M_PIT lifts M_P's val drafts by {' / '.join(f'{v:+.3f}' for v in lift)} after round 2 (mean {mean(lift):+.3f},"
      f" >= +0.15), by {' / '.join(f'{v:+.3f}' for v in sft)} with its SFT alone: {'passes' if passed else 'fails'}")
sys.exit(0 if passed else 1)
PY
done
echo "no candidate passes: the task stays as it is" >&2
exit 1
