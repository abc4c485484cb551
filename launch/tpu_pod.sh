#!/usr/bin/env bash
# Runs flowav training on every worker of a Cloud TPU pod slice: one process per TPU VM host, each
# started over `gcloud ... ssh --worker=all`. JAX finds its place in the slice (process id, count,
# coordinator) from the TPU metadata (`--distributed=cluster`).
#
# usage: launch/tpu_pod.sh [--dry-run] --tpu=NAME --zone=ZONE [--project=PROJECT]
#                          [--repo=DIR_ON_THE_VMS] [--python=PYTHON_ON_THE_VMS] TRAIN_FLAGS...
#   launch/tpu_pod.sh --tpu=my-v5p-64 --zone=us-east5-a --repo='~/flowav' --python='~/flowav/.venv/bin/python' \
#     --config=configs/vssflow.py:paper --config.data.dir=/mnt/shared/data/vss --workdir=/mnt/shared/runs/vss
#
# Every VM needs the repository at --repo (default ~/flowav) with flowav installed (`pip install -e
# '.[tpu]'`), and --workdir and --config.data.dir must be on a filesystem every worker mounts (e.g.
# Filestore / NFS; flowav reads and writes local paths). TRAIN_FLAGS go unchanged to
# `python -m flowav.main train`. --dry-run prints the gcloud command exactly as it would run.
set -euo pipefail

dry_run=0 tpu="" zone="" project="" remote_repo='~/flowav' remote_python=python3
train_args=()
for arg in "$@"; do
  case "$arg" in
    --dry-run) dry_run=1 ;;
    --tpu=*) tpu="${arg#*=}" ;;
    --zone=*) zone="${arg#*=}" ;;
    --project=*) project="${arg#*=}" ;;
    --repo=*) remote_repo="${arg#*=}" ;;
    --python=*) remote_python="${arg#*=}" ;;
    *) train_args+=("$arg") ;;
  esac
done
if [[ -z "$tpu" || -z "$zone" ]]; then
  echo "usage: launch/tpu_pod.sh [--dry-run] --tpu=NAME --zone=ZONE [--project=P] TRAIN_FLAGS..." >&2
  exit 2
fi

# The remote shell expands ~ in --repo / --python; train flags are quoted so they arrive verbatim.
quoted=""
if ((${#train_args[@]})); then printf -v quoted ' %q' "${train_args[@]}"; fi
remote="cd $remote_repo && PYTHONUNBUFFERED=1 $remote_python -m flowav.main train --distributed=cluster$quoted"
cmd=(gcloud compute tpus tpu-vm ssh "$tpu" "--zone=$zone")
if [[ -n "$project" ]]; then cmd+=("--project=$project"); fi
cmd+=(--worker=all "--command=$remote")

if ((dry_run)); then
  printf -v out '%q ' "${cmd[@]}"; echo "${out% }"
  exit 0
fi
exec "${cmd[@]}"
