# syntax=docker/dockerfile:1
#
# The Aurora image: one `aurora` binary that the Helm chart runs as `aurora controlplane` and
# `aurora dataplane`. Build: docker build -t aurora:0.1.0 .
#
# The binary links rustls with ring and carries the webpki roots, and protobuf is compiled by the
# pure-Rust protox, so the build needs no protoc or OpenSSL and the runtime no CA bundle. It does
# link glibc, hence distroless/cc (glibc, libgcc, nothing else; no shell) rather than static.

ARG RUST_IMAGE=rust:1-bookworm
ARG RUNTIME_IMAGE=gcr.io/distroless/cc-debian12:nonroot

FROM ${RUST_IMAGE} AS build
WORKDIR /src
COPY . .
# Cache mounts keep the registry and target/ between builds without putting them in a layer.
# Line tables are dropped (symbols stay for backtraces) to keep the image small.
RUN --mount=type=cache,target=/usr/local/cargo/registry,sharing=locked \
    --mount=type=cache,target=/usr/local/cargo/git,sharing=locked \
    --mount=type=cache,target=/src/target,sharing=locked \
    CARGO_PROFILE_RELEASE_STRIP=debuginfo cargo build --release --locked --bin aurora \
    && install -D -m 0755 target/release/aurora /out/aurora

FROM ${RUNTIME_IMAGE}
LABEL org.opencontainers.image.title="aurora" \
      org.opencontainers.image.description="Self-hosted gateway for provider-native LLM traffic" \
      org.opencontainers.image.licenses="Apache-2.0"
COPY --from=build /out/aurora /usr/local/bin/aurora
# 65532 is distroless's "nonroot"; its home is writable, so the control plane's default
# sqlite://aurora-data/aurora.db works under `docker run` too. The chart mounts a volume instead.
USER 65532:65532
WORKDIR /home/nonroot
# 8080 traffic and 9090 admin (data plane); 50051 gRPC and 9091 metrics (control plane).
EXPOSE 8080 9090 50051 9091
ENTRYPOINT ["/usr/local/bin/aurora"]
CMD ["--help"]
