#!/usr/bin/env bash
# Three-replica drain test behind HAProxy; see run.py. Usage: tests/replicas/run.sh [INFERNO_BIN] [MODEL_PATH]
set -euo pipefail
exec python3 "$(dirname "$0")/run.py" "$@"
