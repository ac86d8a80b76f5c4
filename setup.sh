#!/usr/bin/env bash
# Create .venv with everything GEMEL, its demo and its tests need (offline-friendly: no model hub access).
set -euo pipefail
cd "$(dirname "$0")"
PYTHON=${PYTHON:-python3}
[ -x .venv/bin/python ] || "$PYTHON" -m venv .venv
.venv/bin/python -m pip install -q -c constraints.txt -r requirements.txt -r requirements-test.txt
.venv/bin/python -m pip install -q --no-deps -r requirements-demo.txt
echo "GEMEL environment ready: .venv"
