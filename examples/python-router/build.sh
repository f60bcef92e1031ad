#!/usr/bin/env bash
# Builds the Python router component with componentize-py (from PyPI; installed into a
# private virtualenv under target/ when it is not on PATH).
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
root="$(cd "$here/../.." && pwd)"
out="${1:-$here/python-router.wasm}"
tool=componentize-py
if ! command -v "$tool" >/dev/null; then
  venv="$root/target/componentize-py-venv"
  if [ ! -x "$venv/bin/componentize-py" ]; then
    python3 -m venv "$venv"
    "$venv/bin/pip" install --quiet componentize-py==0.25.1
  fi
  tool="$venv/bin/componentize-py"
fi
cd "$here"
"$tool" -d "$root/wit" -w consumer componentize app -o "$out"
