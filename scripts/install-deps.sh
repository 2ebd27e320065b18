#!/usr/bin/env bash
# Installs every build and test dependency of moe-compiler on Debian 12.
# Fast when everything is already installed (no apt-get update then).
set -euo pipefail
PKGS=(
  cmake ninja-build ccache g++ git
  llvm-22-dev libmlir-22-dev mlir-22-tools llvm-22-tools clang-22 lld-22 libclang-rt-22-dev
  libfmt-dev nlohmann-json3-dev libflatbuffers-dev flatbuffers-compiler
  libopenblas-dev libopenmpi-dev openmpi-bin
  libpcre2-dev libutf8proc-dev
  libgtest-dev python3-numpy
  libcpp-httplib-dev pkg-config
)
# moe-serve's HTTP is cpp-httplib (docs/serving.md says why); the test of the
# official openai npm client installs its pinned version (package-lock.json)
# into test/Serve/openai-client/node_modules when node and npm are present.
install_openai_client() {
  local dir
  dir="$(cd "$(dirname "$0")/.." && pwd)/test/Serve/openai-client"
  if command -v node >/dev/null && command -v npm >/dev/null && \
     [ ! -d "$dir/node_modules/openai" ]; then
    (cd "$dir" && npm ci --no-audit --no-fund --loglevel=error) ||
      echo "install-deps: npm ci in $dir failed: test/Serve/openai-node.test is unsupported"
  fi
}
trap install_openai_client EXIT
missing=()
for p in "${PKGS[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
# node and npm run the official openai client against moe-serve; Debian's
# packages unless a node with npm is already there (e.g. NodeSource's, which
# bundles npm and conflicts with Debian's npm package).
command -v node >/dev/null && command -v npm >/dev/null || missing+=(nodejs npm)
if [ ${#missing[@]} -eq 0 ]; then
  echo "install-deps: all ${#PKGS[@]} packages present"
  exit 0
fi
SUDO=""
[ "$(id -u)" -eq 0 ] || SUDO=sudo
echo "install-deps: installing ${missing[*]}"
$SUDO apt-get update -qq
DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}"
