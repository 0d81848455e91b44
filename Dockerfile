# The web app image used by docker-compose.yml (untested here: no Docker engine in this sandbox).
FROM python:3.11-slim
RUN apt-get update && apt-get install -y --no-install-recommends build-essential cmake git && rm -rf /var/lib/apt/lists/*
WORKDIR /app
COPY . .
# portable llama.cpp kernels (AVX2): the image may run on another CPU than the one that built it
RUN ASSISTANT_LLAMA_SIMD=avx2 scripts/setup.sh
EXPOSE 7860
CMD [".venv/bin/assistant", "serve", "--host", "0.0.0.0"]
