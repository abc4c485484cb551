#!/usr/bin/env bash
# Starts N flowav training processes on this machine, joined through a coordinator on 127.0.0.1.
# It simulates (or uses) several hosts: each process reads its own share of every global batch.
#
# usage: launch/local_multiprocess.sh [--dry-run] [--num_processes=N] [--devices_per_process=D]
#                                     [--port=P] TRAIN_FLAGS...
#   launch/local_multiprocess.sh --num_processes=2 --devices_per_process=4 \
#     --config=configs/vssflow.py:tiny --config.data.batch_size=8 --workdir=runs/mp
#
# TRAIN_FLAGS go unchanged to `python -m flowav.main train`. --devices_per_process=D simulates D
# CPU devices per process (XLA_FLAGS); leave it out on a machine with accelerators. --port defaults
# to a free one. PYTHON (default: the repo's .venv, else `python`) runs the processes. --dry-run
# prints each process's command line, exactly as it would run, and starts nothing.
set -euo pipefail

repo="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
if [[ -z "${PYTHON:-}" ]]; then
  if [[ -x "$repo/.venv/bin/python" ]]; then PYTHON="$repo/.venv/bin/python"; else PYTHON=python; fi
fi
dry_run=0 num=2 devices="" port=""
train_args=()
for arg in "$@"; do
  case "$arg" in
    --dry-run) dry_run=1 ;;
    --num_processes=*) num="${arg#*=}" ;;
    --devices_per_process=*) devices="${arg#*=}" ;;
    --port=*) port="${arg#*=}" ;;
    *) train_args+=("$arg") ;;
  esac
done
if [[ -z "$port" ]]; then  # ask the OS for a free port
  port="$("$PYTHON" -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')"
fi

envs=("PYTHONPATH=$repo${PYTHONPATH:+:$PYTHONPATH}" "PYTHONUNBUFFERED=1")
if [[ -n "$devices" ]]; then envs+=("XLA_FLAGS=--xla_force_host_platform_device_count=$devices"); fi

print_cmd() { local out; printf -v out '%q ' "$@"; echo "${out% }"; }
pids=()
stop_all() {  # only the processes this script started, by pid
  for pid in "${pids[@]}"; do kill "$pid" 2>/dev/null || true; done
}
trap 'stop_all; exit 143' TERM INT
for ((i = 0; i < num; i++)); do
  cmd=(env "${envs[@]}" "$PYTHON" -m flowav.main train "--coordinator_address=127.0.0.1:$port"
       "--num_processes=$num" "--process_id=$i" ${train_args[@]+"${train_args[@]}"})
  if ((dry_run)); then
    print_cmd "${cmd[@]}"
  else
    "${cmd[@]}" &
    pids+=($!)
  fi
done
((dry_run)) && exit 0

# A process that fails leaves the others waiting on collectives: stop them and report its status.
for ((i = 0; i < num; i++)); do
  status=0
  wait -n || status=$?  # the next of our children to end (they are the only ones)
  if ((status != 0)); then
    echo "local_multiprocess.sh: a process exited with status $status; stopping the others" >&2
    stop_all
    wait || true
    exit "$status"
  fi
done
