#!/bin/bash
# #32 item 5: run the takeover test N times at COMMIT (a fresh worktree, this checkout's .venv) and append one line
# of key=value fields per run to results.txt (rc 0: passed; 1: failed, with the weight files that differ).
# SUBPROCESS_THREADS=k gives the holder and waiter k torch threads while the in-process reference keeps torch's
# own count. ISA=avx2 makes MKL, oneDNN and ATen use their AVX2 kernels (what an AMD EPYC without AVX-512 runs)
# in every process; MKL_DYNAMIC, when set, reaches every process; HOG=1 runs a busy loop beside the test. All are
# recorded.
# Usage: bash experiments/flake/takeover.sh COMMIT N
set -uo pipefail
here=$(cd "$(dirname "$0")" && pwd); repo=$(cd "$here/../.." && pwd)
commit=$1; n=$2; scratch=$(mktemp -d); tree=$scratch/tree
beside=nothing; hog=
if [ "${HOG:-0}" = 1 ]; then (while true; do :; done) & hog=$!; beside=busy-loop; fi
trap 'git -C "$repo" worktree remove --force "$tree"; rm -rf "$scratch"; [ -z "$hog" ] || kill "$hog"' EXIT
git -C "$repo" worktree add --detach "$tree" "$commit" > /dev/null 2>&1 || exit 1
test=tests/test_concurrency.py::test_waiter_takes_over_from_a_killed_holder
if [ "${ISA:-default}" = avx2 ]; then export MKL_ENABLE_INSTRUCTIONS=AVX2 ONEDNN_MAX_CPU_ISA=AVX2 ATEN_CPU_CAPABILITY=avx2; fi
cpu=$(lscpu | sed -n 's/^Model name: *//p' | tr -s ' ' '_')
cd "$tree"
for i in $(seq 1 "$n"); do
  out=$(PYTHONPATH="$tree:$here" timeout 600 "$repo/.venv/bin/python" -m pytest -p no:cacheprovider -p threads_plugin \
        -q "$test" 2>&1)
  rc=$?
  differ=$(echo "$out" | grep -o "{'[a-z_/]*model.safetensors'" | tr -d "{'" | sort -u | paste -sd, -)
  echo "commit=$(git rev-parse --short HEAD) cpu=$cpu cpus=$(nproc) subprocess_threads=${SUBPROCESS_THREADS:-default}" \
       "isa=${ISA:-default} mkl_dynamic=${MKL_DYNAMIC:-default} beside=$beside run=$i rc=$rc" \
       "differ=${differ:-none}" | tee -a "$here/results.txt"
done
