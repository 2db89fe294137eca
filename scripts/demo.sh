#!/usr/bin/env bash
# Set up (idempotent) and run the demo: generate a capture, replay it through the full pipeline.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
exec .venv/bin/maltrail demo "$@"
