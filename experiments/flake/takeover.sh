#!/bin/bash
# #32 item 5: run the takeover test N times at COMMIT (a fresh worktree, this checkout's .venv) and append one line
# per run to results.txt (rc 0: passed; rc 1: failed, with the weight files that differ). SUBPROCESS_THREADS=k
# gives the holder and waiter k torch threads while the in-process reference keeps torch's own count.
# Usage: bash experiments/flake/takeover.sh COMMIT N
set -u
here=$(cd "$(dirname "$0")" && pwd); repo=$(cd "$here/../.." && pwd)
commit=$1; n=$2; tree=$(mktemp -d)/tree
git -C "$repo" worktree add --detach "$tree" "$commit" > /dev/null 2>&1 || exit 1
test=tests/test_concurrency.py::test_waiter_takes_over_from_a_killed_holder
cd "$tree"
for i in $(seq 1 "$n"); do
  out=$(PYTHONPATH="$tree:$here" timeout 600 "$repo/.venv/bin/python" -m pytest -p no:cacheprovider -p threads_plugin \
        -q "$test" 2>&1)
  rc=$?
  differ=$(echo "$out" | grep -o "{'[a-z_/]*model.safetensors'" | sort -u | tr -d "{'" | tr '\n' ' ')
  echo "$(git rev-parse --short HEAD) subprocess_threads=${SUBPROCESS_THREADS:-default} nproc=$(nproc) run=$i rc=$rc" \
       "${differ:+differ: $differ}" | tee -a "$here/results.txt"
done
cd "$repo" && git worktree remove --force "$tree"
