#!/usr/bin/env bash
# Run the benchmark suite and save a JSON baseline in .benchmarks/.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
.venv/bin/python -m pytest bench -p no:cacheprovider -o python_files='bench_*.py' \
    --benchmark-enable --benchmark-autosave -s "$@"
