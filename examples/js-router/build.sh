#!/usr/bin/env bash
# Builds the JavaScript router component with componentize-js (see scripts/build-js).
#   examples/js-router/build.sh [output.wasm]   (default: examples/js-router/js-router.wasm)
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
bash "$here/../../scripts/build-js" "$here/handler.js" "${1:-$here/js-router.wasm}"
