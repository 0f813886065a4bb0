# syntax=docker/dockerfile:1
# The two images of this repository, for machines with Docker; tests/cluster/images.sh builds the
# same images without Docker (the binary, its shared libraries, user 65532):
#   docker build --target echo  -t fargo.dev/echo:dev .    the example function (fargo-echo)
#   docker build --target fargo -t fargo.dev/fargo:dev .   the controller and activator (default)

FROM rust:1.95-bookworm AS build
WORKDIR /src
COPY . .
RUN --mount=type=cache,target=/usr/local/cargo/registry \
    --mount=type=cache,target=/src/target,sharing=locked \
    cargo build --release --locked --bin fargo --bin fargo-runtime-api --bin fargo-echo && \
    mkdir /out && cp target/release/fargo target/release/fargo-runtime-api target/release/fargo-echo /out/

# distroless/cc: glibc and libgcc, which the binaries link, and nothing else.
FROM gcr.io/distroless/cc-debian12:nonroot AS echo
COPY --from=build /out/fargo-echo /usr/local/bin/fargo-echo
USER 65532:65532
ENV PORT=8080
EXPOSE 8080
ENTRYPOINT ["/usr/local/bin/fargo-echo"]

FROM gcr.io/distroless/cc-debian12:nonroot AS fargo
COPY --from=build /out/fargo /usr/local/bin/fargo
# The sidecar of handler functions' pods, run from this image.
COPY --from=build /out/fargo-runtime-api /usr/local/bin/fargo-runtime-api
USER 65532:65532
EXPOSE 9090
ENTRYPOINT ["/usr/local/bin/fargo"]
