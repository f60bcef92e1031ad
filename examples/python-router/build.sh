#!/usr/bin/env bash
# Builds the Python router component with componentize-py (see scripts/build-python).
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
bash "$here/../../scripts/build-python" "$here" "${1:-$here/python-router.wasm}"
