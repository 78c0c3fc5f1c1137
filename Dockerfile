# syntax=docker/dockerfile:1
#
# Multi-stage image holding both binaries:
#   /usr/local/bin/ktransform   the service        (`ktransform run`)
#   /usr/local/bin/generate     the example event generator (`generate --brokers ...`)
#
# There is deliberately no ENTRYPOINT: the container command is the full
# command line, so one image serves both the `transformer` and `generator`
# compose services. The default CMD runs the service.
#
# Needs BuildKit (default for `docker build` / `docker compose` v2; for the
# legacy python docker-compose v1 set COMPOSE_DOCKER_CLI_BUILD=1 DOCKER_BUILDKIT=1).

ARG RUST_VERSION=1
ARG DEBIAN_RELEASE=bookworm

########################################################################
# builder: compile ktransform + the `generate` example
########################################################################
FROM rust:${RUST_VERSION}-${DEBIAN_RELEASE} AS builder

# rdkafka-sys (default features) builds the bundled librdkafka with its
# mklove ./configure + make: needs a C/C++ toolchain, make, bash, pkg-config,
# and zlib headers (feature `libz`, linked dynamically against the system zlib).
# No cmake (only for the `cmake-build` feature). OpenSSL is built from source by the
# `ssl-vendored` feature (needs perl and make, both in this image).
RUN apt-get update \
 && apt-get install -y --no-install-recommends \
        build-essential \
        pkg-config \
        zlib1g-dev \
 && rm -rf /var/lib/apt/lists/*

WORKDIR /build

# The whole (filtered, see .dockerignore) tree: with the cargo registry and the
# target dir on cache mounts, a source change only recompiles this crate, so
# there is no need for the dummy-main trick.
COPY . .

# target/ lives in a cache mount, so the binaries are copied out in the same
# step. sharing=locked serialises parallel builds of the same cache (compose
# builds `generator` and `transformer` concurrently).
RUN --mount=type=cache,target=/usr/local/cargo/registry,sharing=locked \
    --mount=type=cache,target=/usr/local/cargo/git,sharing=locked \
    --mount=type=cache,target=/build/target,sharing=locked \
    cargo build --release --locked --bin ktransform --example generate \
 && mkdir -p /out \
 && cp target/release/ktransform target/release/examples/generate /out/

########################################################################
# runtime: slim Debian of the same release (same glibc as the builder)
########################################################################
FROM debian:${DEBIAN_RELEASE}-slim AS runtime

# zlib1g is already in the base image; listed to make the runtime dependency
# of librdkafka explicit.
RUN apt-get update \
 && apt-get install -y --no-install-recommends \
        ca-certificates \
        zlib1g \
 && rm -rf /var/lib/apt/lists/*

RUN groupadd --system --gid 10001 ktransform \
 && useradd --system --uid 10001 --gid ktransform \
        --no-create-home --home-dir /nonexistent --shell /usr/sbin/nologin ktransform

COPY --from=builder /out/ktransform /out/generate /usr/local/bin/

USER 10001:10001
WORKDIR /tmp

ENV RUST_LOG=info
# Prometheus metrics (only reachable on the compose network; not published).
EXPOSE 9464

# The service drains in-flight work and commits offsets on SIGTERM.
STOPSIGNAL SIGTERM
CMD ["ktransform", "run"]
