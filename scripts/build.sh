#!/usr/bin/env bash
# Configures (once) and builds moe-compiler into ${BUILD_DIR:-build}.
set -euo pipefail
cd "$(dirname "$0")/.."
B=${BUILD_DIR:-build}
if [ ! -f "$B/build.ninja" ]; then
  cmake -S . -B "$B" -G Ninja -DCMAKE_BUILD_TYPE=${BUILD_TYPE:-Release} "$@"
fi
cmake --build "$B"
