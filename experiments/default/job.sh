# One pit.run job of the default experiment's scripts (sourced by run.sh and task.sh): skipped when its dir holds a
# finished results.json, else run quietly with its log beside the dir.  run_job <job_dir> <override>...
run_job() {
  local out=$1
  shift
  [ -f "$out/results.json" ] && grep -q wall_seconds "$out/results.json" && return 0
  mkdir -p "$out"
  "$PY" -m pit.run "$@" logger=none trainer.enable_progress_bar=false hydra.run.dir="$out" > "$out.log" 2>&1
}
