#!/usr/bin/env bash
# Builds handler.wasm from app.py with componentize-py: the one on PATH, else the one
# Beehive's demo installed under $BEEHIVE_HOME/target, else one installed (once, from PyPI)
# into ~/.cache/beehive-tools. The SDK is in sdk/, the WIT contract in wit/.
set -euo pipefail
cd "$(dirname "$0")"
BEEHIVE_HOME="${BEEHIVE_HOME:-{{beehive_home}}}"
version=0.25.1
tool="$(command -v componentize-py || true)"
if [ -z "$tool" ]; then
  for venv in "$BEEHIVE_HOME/target/componentize-py-venv" \
              "${XDG_CACHE_HOME:-$HOME/.cache}/beehive-tools/componentize-py-$version"; do
    if [ -x "$venv/bin/componentize-py" ]; then tool="$venv/bin/componentize-py"; break; fi
  done
fi
if [ -z "$tool" ]; then
  venv="${XDG_CACHE_HOME:-$HOME/.cache}/beehive-tools/componentize-py-$version"
  echo "installing componentize-py==$version into $venv" >&2
  python3 -m venv "$venv"
  "$venv/bin/pip" install --quiet "componentize-py==$version"
  tool="$venv/bin/componentize-py"
fi
"$tool" -d wit -w consumer componentize app -p . -p sdk -o handler.wasm
echo "built $(pwd)/handler.wasm" >&2
