#!/usr/bin/env bash
# Print the interpreter that `.venv` is made with: MALTRAIL_PYTHON when set; else Debian's
# /usr/bin/python3 when it is 3.11 or newer; else python3 on PATH. Debian's interpreter has
# libpython linked in statically and comes from Debian's optimized build; a default pyenv build
# (configured without --enable-optimizations) loads a shared libpython, and the sensor ran 5-20 %
# slower on one (docs/PERFORMANCE.md, thirteenth session).
set -euo pipefail
system=${MALTRAIL_SYSTEM_PYTHON:-/usr/bin/python3}  # a test points this elsewhere
if [ -n "${MALTRAIL_PYTHON:-}" ]; then
    echo "$MALTRAIL_PYTHON"
elif [ -x "$system" ] && "$system" -c 'import sys; sys.exit(sys.version_info < (3, 11))' 2>/dev/null; then
    echo "$system"
else
    echo python3
fi
