#!/usr/bin/env bash
# Which instruction set to build llama.cpp's CPU kernels for; prints the level, then its CMake
# arguments, one per line. GGML_NATIVE=ON crashes on these sandboxes, so the level is chosen here.
# AVX2 runs on any x86-64 of the last decade. Where the CPU has AVX-512 (with VNNI), the bundled
# model reads prompts ~1.8x faster (80 -> 140-150 tokens/s on the 2-core EPYC this was measured
# on) and writes ~1.4x faster (10.7 -> 14.7 tokens/s). A wheel built for AVX-512 dies with SIGILL
# on a CPU without it: setup.sh keeps its wheel cache and venv stamp per level.
#   ASSISTANT_LLAMA_SIMD=auto (default) | avx2 (portable: a Docker image for other machines) | avx512
#   CPUINFO=file  read the CPU flags from another file than /proc/cpuinfo (tests)
set -euo pipefail
level=${ASSISTANT_LLAMA_SIMD:-auto}
if [ "$level" = auto ]; then
  level=avx2
  flags=$(grep -m1 '^flags' "${CPUINFO:-/proc/cpuinfo}" 2>/dev/null || true)
  has() { case " $flags " in *" $1 "*) return 0 ;; *) return 1 ;; esac; }
  if has avx512f && has avx512bw && has avx512vl && has avx512dq && has avx512cd && has avx512_vnni; then
    level=avx512
  fi
fi
case "$level" in
  avx2) echo avx2; echo "-DGGML_NATIVE=OFF" ;;
  avx512) echo avx512; echo "-DGGML_NATIVE=OFF -DGGML_AVX512=ON -DGGML_AVX512_VNNI=ON" ;;
  *) echo "ASSISTANT_LLAMA_SIMD must be auto, avx2 or avx512 (got '$level')." >&2; exit 1 ;;
esac
