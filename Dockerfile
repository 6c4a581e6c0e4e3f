# One image holding every Tern binary; compose.yaml picks the service by command.
FROM rust:1.95-bookworm AS build
WORKDIR /src
COPY . .
RUN cargo build --release --workspace --bins

FROM debian:bookworm-slim
COPY --from=build /src/target/release/tern-* /usr/local/bin/
COPY --from=build /src/target/release/tern /usr/local/bin/tern
