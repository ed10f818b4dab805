#!/usr/bin/env bash
# A bash wrapper as many repositories ship (scripts/train.sh): it sets things up and calls python.
set -euo pipefail
echo "wrapper: starting"
python "$(dirname "$0")/loop.py" "$@"
