#!/usr/bin/env bash
# Builds handler.wasm from handler.js with componentize-js: $COMPONENTIZE_JS if set, else
# the one Beehive's demo installed under $BEEHIVE_HOME/target/js-tools, else one installed
# (once, from npm) into ~/.cache/beehive-tools. beehive.js is the SDK, wit/ the contract.
# `-d http fetch-event`: without it the component imports wasi:http, which the host refuses.
set -euo pipefail
cd "$(dirname "$0")"
BEEHIVE_HOME="${BEEHIVE_HOME:-{{beehive_home}}}"
version=0.23.0
installed() {
  [ -x "$1/node_modules/.bin/componentize-js" ] && [ "$(sed -n 's/.*"version": *"\([^"]*\)".*/\1/p' \
    "$1/node_modules/@bytecodealliance/componentize-js/package.json" 2>/dev/null | head -1)" = "$version" ]
}
tool="${COMPONENTIZE_JS:-}"
if [ -z "$tool" ]; then
  for tools in "$BEEHIVE_HOME/target/js-tools" \
               "${XDG_CACHE_HOME:-$HOME/.cache}/beehive-tools/componentize-js-$version"; do
    if installed "$tools"; then tool="$tools/node_modules/.bin/componentize-js"; break; fi
  done
fi
if [ -z "$tool" ]; then
  tools="${XDG_CACHE_HOME:-$HOME/.cache}/beehive-tools/componentize-js-$version"
  command -v npm >/dev/null || { echo "error: npm not found (Node 20 or later is needed to build JavaScript handlers)" >&2; exit 1; }
  echo "installing @bytecodealliance/componentize-js@$version into $tools" >&2
  mkdir -p "$tools"
  [ -f "$tools/package.json" ] || echo '{"name": "beehive-js-tools", "private": true}' > "$tools/package.json"
  npm install --prefix "$tools" --no-audit --no-fund --save-exact --loglevel=error \
    "@bytecodealliance/componentize-js@$version" >&2
  tool="$tools/node_modules/.bin/componentize-js"
fi
"$tool" handler.js --wit wit -n consumer -d http fetch-event -o handler.wasm
echo "built $(pwd)/handler.wasm" >&2
