#!/usr/bin/env bash
# The GPU figures of issues #20 and #30 in one command, on one GPU: the bench (about 8 minutes; workloads that would
# start after --deadline seconds are skipped), then `+experiment=hh_rlhf` at Pythia-410M's size for a few steps per
# stage (killed after HH_DEADLINE seconds, default 240), merged into one report. Under a 10-minute limit per command:
# `HH_DEADLINE=150 bash experiments/bench/gpu.sh --deadline 330`.
#   bash experiments/bench/gpu.sh            -> experiments/bench/results/gpu-<card>.{md,json,png}
#   bash experiments/bench/gpu.sh --dry-run  -> the same code paths at tiny sizes on CPU
# Needs torch (CUDA), transformers, lightning, peft and matplotlib; TRL 1.0.0, datasets, hydra-core and omegaconf
# come from the wheels in .whl/ (`make wheels`) when present, else from the environment (`make bench` has them).
# Results go to $OUT when it is set (a device machine's output folder), else to experiments/bench/results.
set -euo pipefail
cd "$(dirname "$0")/../.."
PY=${PY:-python3}
if compgen -G ".whl/*.whl" > /dev/null; then
  "$PY" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/pit-site .whl/*.whl
  export PYTHONPATH="/tmp/pit-site${PYTHONPATH:+:$PYTHONPATH}"
fi
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}" PYTHONUNBUFFERED=1 WANDB_MODE=disabled TOKENIZERS_PARALLELISM=false
"$PY" - <<'PYEOF'
import torch, transformers, lightning
print("torch", torch.__version__, "cuda", torch.version.cuda, "| transformers", transformers.__version__,
      "| lightning", lightning.__version__, "|", torch.cuda.get_device_name() if torch.cuda.is_available() else "CPU")
PYEOF
out=${OUT:-experiments/bench/results}
"$PY" experiments/bench/gpu.py --out "$out" "$@"
case " $* " in *" --workloads"*|*" --merge"*) exit 0 ;; esac   # a chosen set of workloads: that is all
card=$("$PY" -c "import sys; sys.path.insert(0, 'experiments/bench'); from gpu import card_name; print(card_name())")
if timeout -k 10 "${HH_DEADLINE:-240}" "$PY" experiments/bench/gpu.py --workloads hh_rlhf --out "$out/hh" "$@"; then
  "$PY" experiments/bench/gpu.py --merge "$out/gpu-$card.json" "$out/hh/gpu-$card.json" --out "$out"
else
  echo "hh_rlhf: did not finish within HH_DEADLINE=${HH_DEADLINE:-240} s (or failed); the bench's report stands" >&2
fi
