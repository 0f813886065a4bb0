# syntax=docker/dockerfile:1
# The three images of this repository, for machines with Docker; tests/cluster/images.sh builds
# the same images without Docker (the binary, its shared libraries, user 65532):
#   docker build --target echo    -t fargo.dev/echo:dev .     the example function (fargo-echo)
#   docker build --target standby -t fargo.dev/standby:dev .  what standby pods run until woken
#   docker build --target fargo   -t fargo.dev/fargo:dev .    the controller and activator (default)
#
# From binaries built outside Docker instead, for a builder that cannot run the Rust stage (no
# Rust image to pull, or Docker's legacy builder, which builds every stage before its target;
# these targets come first so that it builds none of the Rust stage):
#   cargo build --release --locked --bin fargo --bin fargo-runtime-api --bin fargo-echo \
#     --bin fargo-standby
#   docker build --target echo-prebuilt    -t fargo.dev/echo:dev .
#   docker build --target standby-prebuilt -t fargo.dev/standby:dev .
#   docker build --target fargo-prebuilt   -t fargo.dev/fargo:dev .
# RUNTIME_IMAGE names another base with glibc and libgcc (tests/e2e/kind.sh makes one here).

# distroless/cc: glibc and libgcc, which the binaries link, and nothing else.
ARG RUNTIME_IMAGE=gcr.io/distroless/cc-debian12:nonroot

FROM ${RUNTIME_IMAGE} AS echo-base
USER 65532:65532
ENV PORT=8080
EXPOSE 8080
ENTRYPOINT ["/usr/local/bin/fargo-echo"]

FROM ${RUNTIME_IMAGE} AS standby-base
USER 65532:65532
ENTRYPOINT ["/usr/local/bin/fargo-standby"]

FROM ${RUNTIME_IMAGE} AS fargo-base
USER 65532:65532
EXPOSE 9090
ENTRYPOINT ["/usr/local/bin/fargo"]

FROM echo-base AS echo-prebuilt
COPY target/release/fargo-echo /usr/local/bin/fargo-echo

FROM standby-base AS standby-prebuilt
COPY target/release/fargo-standby /usr/local/bin/fargo-standby

# fargo-runtime-api: the sidecar of handler functions' pods, run from this image.
FROM fargo-base AS fargo-prebuilt
COPY target/release/fargo target/release/fargo-runtime-api /usr/local/bin/

FROM rust:1.95-bookworm AS build
WORKDIR /src
COPY . .
RUN --mount=type=cache,target=/usr/local/cargo/registry \
    --mount=type=cache,target=/src/target,sharing=locked \
    cargo build --release --locked --bin fargo --bin fargo-runtime-api --bin fargo-echo \
      --bin fargo-standby && \
    mkdir /out && cp target/release/fargo target/release/fargo-runtime-api \
      target/release/fargo-echo target/release/fargo-standby /out/

FROM echo-base AS echo
COPY --from=build /out/fargo-echo /usr/local/bin/fargo-echo

FROM standby-base AS standby
COPY --from=build /out/fargo-standby /usr/local/bin/fargo-standby

FROM fargo-base AS fargo
COPY --from=build /out/fargo /out/fargo-runtime-api /usr/local/bin/
