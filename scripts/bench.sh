#!/usr/bin/env bash
# Run the benchmark suite and save a JSON baseline: .benchmarks/<machine>/<NNNN>_<commit>_<date>.json
# (pytest-benchmark's autosave; compare two with `.venv/bin/pytest-benchmark compare`).
# Extra arguments go to pytest, e.g. `bash scripts/bench.sh -k pipeline`. `-k unique` measures issue 12's
# targets (traffic where everything is new) and ends with a table of them; with
# MALTRAIL_BENCH_BASE=<another checkout> the table also gives that checkout's figures, measured by turns,
# and the ratios.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
.venv/bin/python -m pytest bench -p no:cacheprovider -o python_files='bench_*.py' \
    --benchmark-enable --benchmark-autosave -s "$@"
echo "baseline saved: $(ls -t .benchmarks/*/*.json | head -1)"
