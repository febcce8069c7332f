# syntax=docker/dockerfile:1
# dedup-gateway container image.
#   docker build -t dedup-gateway:0.1.0 .
#   docker run -p 8080:8080 -e DEDUP_GATEWAY_UPSTREAM=http://oscar.oscar:8080 dedup-gateway:0.1.0
# The spool, dead-letter queue and dedup-secret live in /var/lib/dedup-gateway: mount a volume
# there (deploy/kubernetes does) or they are lost with the container.

# --- build: the release binary, exactly the locked dependency versions ---------------------------
FROM rust:1.95-bookworm AS build
WORKDIR /src
COPY . .
# Cache mounts keep the registry and target dir between builds; the binary is copied out of the
# cached target dir because cache mounts are not part of the image.
RUN --mount=type=cache,target=/usr/local/cargo/registry \
    --mount=type=cache,target=/src/target \
    cargo build --release --locked --bin dedup-gateway \
    && install -D -m 0755 target/release/dedup-gateway /out/dedup-gateway \
    && install -d -m 0750 /out/data

# --- runtime: glibc + CA certificates, no shell, non-root (uid 65532) -----------------------------
FROM gcr.io/distroless/cc-debian12:nonroot
COPY --from=build /out/dedup-gateway /usr/local/bin/dedup-gateway
COPY --from=build --chown=65532:65532 /out/data /var/lib/dedup-gateway
COPY config/gateway.toml /etc/dedup-gateway/gateway.toml
ENV DEDUP_GATEWAY_DATA_DIR=/var/lib/dedup-gateway \
    DEDUP_GATEWAY_LOG_FORMAT=json
USER 65532:65532
EXPOSE 8080
VOLUME ["/var/lib/dedup-gateway"]
ENTRYPOINT ["/usr/local/bin/dedup-gateway"]
CMD ["serve", "--config", "/etc/dedup-gateway/gateway.toml"]
