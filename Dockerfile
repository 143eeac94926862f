# syntax=docker/dockerfile:1.7
# Inferno container image, CPU by default:
#   docker build -t inferno:cpu .
# CUDA (llama.cpp's CUDA backend, statically linked against cudart/cuBLAS; needs the NVIDIA
# container toolkit at run time, which injects libcuda.so.1 from the host driver):
#   docker build -t inferno:cuda \
#     --build-arg BUILDER_IMAGE=nvidia/cuda:12.6.3-devel-ubuntu24.04 \
#     --build-arg RUNTIME_IMAGE=nvidia/cuda:12.6.3-runtime-ubuntu24.04 \
#     --build-arg FEATURES="--features cuda" \
#     --build-arg CUDA_ARCHITECTURES="75;80;86;89;90" .
# Run: docker run -p 8080:8080 -v inferno-models:/models inferno:cpu
#   (pulls the default model into the /models volume on first start; `inferno pull` does it ahead)
# Builder and runtime images must share a libc: bookworm with bookworm-slim, or the same
# Ubuntu release for the two nvidia/cuda images.

ARG BUILDER_IMAGE=rust:1-bookworm
ARG RUNTIME_IMAGE=debian:bookworm-slim

FROM ${BUILDER_IMAGE} AS builder
ARG FEATURES=""
# Only read by CUDA builds: CMake's CMAKE_CUDA_ARCHITECTURES (llama-cpp-sys forwards CMAKE_* env).
ARG CUDA_ARCHITECTURES="75;80;86;89;90"
SHELL ["/bin/bash", "-o", "pipefail", "-c"]
# llama.cpp needs cmake and clang/libclang (bindgen); curl for rustup on images without Rust.
# hadolint ignore=DL3008
RUN apt-get update \
 && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends \
      cmake clang libclang-dev make curl ca-certificates git \
 && rm -rf /var/lib/apt/lists/*
ENV RUSTUP_HOME=/usr/local/rustup CARGO_HOME=/usr/local/cargo PATH=/usr/local/cargo/bin:$PATH
# rust:1-bookworm already has a toolchain; the nvidia/cuda devel images do not.
RUN command -v cargo >/dev/null \
 || curl --proto '=https' --tlsv1.2 -sSf https://sh.rustup.rs | sh -s -- -y --profile minimal --no-modify-path
WORKDIR /src
COPY Cargo.toml Cargo.lock Makefile ./
COPY benches ./benches
COPY crates ./crates
COPY src ./src
# The same command as `make build` (cargo build --release --locked $FEATURES). The CUDA stubs
# directory lets the linker resolve libcuda without a driver in the build container.
RUN --mount=type=cache,target=/usr/local/cargo/registry \
    --mount=type=cache,target=/src/target \
    case "$FEATURES" in \
      *cuda*) export CMAKE_CUDA_ARCHITECTURES="$CUDA_ARCHITECTURES" LIBRARY_PATH="/usr/local/cuda/lib64/stubs${LIBRARY_PATH:+:$LIBRARY_PATH}" ;; \
    esac \
 && make build FEATURES="$FEATURES" \
 && install -D -m 0755 target/release/inferno /out/inferno

FROM ${RUNTIME_IMAGE} AS runtime
# libgomp1: llama.cpp's OpenMP runtime; ca-certificates: `inferno pull` over HTTPS.
# hadolint ignore=DL3008
RUN apt-get update \
 && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends libgomp1 ca-certificates \
 && rm -rf /var/lib/apt/lists/* \
 && groupadd --system --gid 10001 inferno \
 && useradd --system --uid 10001 --gid inferno --home-dir /home/inferno --create-home --shell /usr/sbin/nologin inferno \
 && mkdir -p /models \
 && chown inferno:inferno /models
COPY --from=builder /out/inferno /usr/local/bin/inferno
ENV INFERNO_HOST=0.0.0.0 \
    INFERNO_PORT=8080 \
    INFERNO_MODELS_DIR=/models \
    OMP_WAIT_POLICY=passive
VOLUME ["/models"]
EXPOSE 8080
USER 10001:10001
# inferno has no HTTP client subcommand and the slim images ship neither curl nor wget, so the
# check speaks HTTP/1.0 through bash's /dev/tcp. /health is 200 while loading and when ready,
# 503 once the model failed to load or its engine stopped.
HEALTHCHECK --interval=30s --timeout=5s --start-period=10m --retries=3 \
  CMD ["bash", "-c", "exec 3<>/dev/tcp/127.0.0.1/${INFERNO_PORT:-8080} && printf 'GET /health HTTP/1.0\\r\\nHost: localhost\\r\\n\\r\\n' >&3 && head -n 1 <&3 | grep -q ' 200 '"]
ENTRYPOINT ["inferno"]
CMD ["serve"]
