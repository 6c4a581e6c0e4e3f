# One image holding every Tern binary; compose.yaml picks the service by command.
FROM rust:1.95-bookworm AS build
WORKDIR /src
COPY . .
RUN cargo build --release --locked --workspace --bins

FROM debian:bookworm-slim
COPY --from=build /src/target/release/tern-* /usr/local/bin/
COPY --from=build /src/target/release/tern /usr/local/bin/tern
# No service runs as root. /data (a storage node's items and log) and /keys (the bus keys the
# bus-keys job writes) belong to the service user, so the named volumes mounted there do too.
RUN useradd --system --uid 10001 --home-dir /data tern \
    && mkdir -p /data /keys \
    && chown tern:tern /data /keys
USER tern
