# syntax=docker/dockerfile:1
#
# oxserve images. Targets:
#   cpu (default)   debian:bookworm-slim + ONNX Runtime from the official
#                   `onnxruntime` wheel
#   example-models  examples/models at /models, copied by the init container
#                   of k8s/ into the pod (see docs/deploy.md)
# The GPU image (NVIDIA CUDA 13 / cuDNN 9 + the `onnxruntime-gpu` wheel) has
# its own file, Dockerfile.gpu: Docker's classic builder (the only one in
# some distributions' docker packages) builds every stage of a file up to
# the target, in order, so GPU stages here would make every CPU build
# compile the server twice and pull the CUDA base. For the same reason
# example-models is the first stage: building it builds nothing else.
#
#   docker build -t oxserve:0.1.0 .
#   docker build --target example-models -t oxserve-example-models:0.1.0 .
#   docker build -f Dockerfile.gpu -t oxserve:0.1.0-gpu .
#
# The server images run as UID/GID 10001 with a read-only root file system in
# mind: they write nothing. gRPC listens on 8001, REST on 8000, Prometheus
# metrics on 8002.
# Models are read from /models (the default `model_repository`): mount the
# repository there read-only, e.g.
#   docker run --rm -p 8000:8000 -p 8001:8001 -v "$PWD/examples/models:/models:ro" oxserve:0.1.0
# Settings: `--config FILE`, OXSERVE_* variables or flags (`oxserve serve --help`).

ARG RUST_VERSION=1.95
# Keep in step with requirements.txt (`onnxruntime==...`): tests/deploy checks.
ARG ORT_VERSION=1.31.1
ARG CARGO_CHEF_VERSION=0.1.73
ARG PYTHON_IMAGE=python:3.12-slim-bookworm
ARG CPU_BASE=debian:bookworm-slim
ARG MODELS_BASE=busybox:1.37

# ---------------------------------------------------------------------------
# The example models as an image of their own, for the init container in
# k8s/base/deployment.yaml. Real deployments build the same from their own
# repository (docs/deploy.md, "Models").
FROM ${MODELS_BASE} AS example-models
COPY --chown=10001:10001 examples/models/ /models/
USER 10001:10001
CMD ["cp", "-R", "/models/.", "/mnt/models/"]

# ---------------------------------------------------------------------------
# Build: cargo-chef splits the dependency build (a layer keyed on Cargo.toml
# files and Cargo.lock only) from the build of oxserve itself, so a source
# change recompiles one crate, not three hundred. Its skeleton replaces
# build.rs with a stub, so proto/ is only needed by the final `cargo build`.
FROM rust:${RUST_VERSION}-bookworm AS chef
ARG CARGO_CHEF_VERSION
# Same profile for the cached dependencies and the final build (a different
# profile would invalidate them); symbol names stay for readable backtraces.
ENV CARGO_PROFILE_RELEASE_STRIP=debuginfo \
    CARGO_TERM_COLOR=never
RUN cargo install cargo-chef --locked --version "${CARGO_CHEF_VERSION}"
WORKDIR /src

FROM chef AS planner
COPY . .
RUN cargo chef prepare --recipe-path recipe.json

# The dependencies alone, a target of their own: after a source change,
# `docker build --target deps` must come entirely from the cache
# (scripts/build-images.sh --rebuild-check).
FROM chef AS deps
COPY --from=planner /src/recipe.json recipe.json
RUN cargo chef cook --release --bin oxserve --recipe-path recipe.json

FROM deps AS builder
COPY . .
RUN cargo build --release --locked --bin oxserve \
 && install -D -m 0755 target/release/oxserve /out/oxserve

# ---------------------------------------------------------------------------
# ONNX Runtime: the shared library from the official wheel on PyPI, pinned.
# pip only downloads; the wheel is a zip and the library inside it does not
# depend on Python. The server finds `libonnxruntime.so` in lib/ beside its
# executable; provider libraries must sit beside the runtime.
FROM ${PYTHON_IMAGE} AS ort-cpu
ARG ORT_VERSION
WORKDIR /tmp/ort
RUN pip download --no-cache-dir --no-deps --only-binary=:all: --dest wheel "onnxruntime==${ORT_VERSION}" \
 && python -m zipfile -e wheel/onnxruntime-"${ORT_VERSION}"-*.whl unpacked \
 && mkdir -p /out/lib \
 && cp unpacked/onnxruntime/capi/libonnxruntime.so."${ORT_VERSION}" \
       unpacked/onnxruntime/capi/libonnxruntime_providers_shared.so /out/lib/ \
 && ln -s libonnxruntime.so."${ORT_VERSION}" /out/lib/libonnxruntime.so

# ---------------------------------------------------------------------------
# CPU image, the default target (last stage). glibc and libstdc++, which ONNX
# Runtime needs, are part of the slim base; nothing else is installed.
FROM ${CPU_BASE} AS cpu
ARG ORT_VERSION
RUN groupadd --system --gid 10001 oxserve \
 && useradd --system --uid 10001 --gid 10001 --no-create-home \
      --home-dir /nonexistent --shell /usr/sbin/nologin oxserve \
 && mkdir -p /models
COPY --from=builder /out/oxserve /opt/oxserve/bin/oxserve
COPY --from=ort-cpu /out/lib/ /opt/oxserve/bin/lib/
ENV PATH=/opt/oxserve/bin:${PATH}
LABEL org.opencontainers.image.title="oxserve" \
      org.opencontainers.image.description="KServe v2 gRPC server for ONNX models" \
      org.opencontainers.image.licenses="Apache-2.0" \
      io.oxserve.onnxruntime="onnxruntime==${ORT_VERSION}"
USER 10001:10001
WORKDIR /
EXPOSE 8000 8001 8002
# Docker's single health status answers "may I send inference traffic?", so
# it asks about readiness. `oxserve health` asks the address the server
# listens on (OXSERVE_GRPC_ADDRESS, or grpc_address in the file named by
# OXSERVE_CONFIG), so moving the port needs no new HEALTHCHECK; when not
# SERVING it prints the server's reason, which `docker inspect` shows.
# Kubernetes ignores HEALTHCHECK and uses the gRPC probes in
# k8s/base/deployment.yaml instead.
HEALTHCHECK --interval=10s --timeout=3s --start-period=60s --retries=3 \
  CMD ["/opt/oxserve/bin/oxserve", "health", "--service", "inference.GRPCInferenceService", "--timeout", "2s"]
ENTRYPOINT ["/opt/oxserve/bin/oxserve"]
CMD ["serve"]
