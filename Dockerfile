# Multi-stage build of the spanline binary.
FROM rust:1.88-bookworm AS build
RUN apt-get update && apt-get install -y --no-install-recommends pkg-config libssl-dev zlib1g-dev && rm -rf /var/lib/apt/lists/*
WORKDIR /src
COPY . .
RUN cargo build --release --locked --bin spanline

FROM debian:bookworm-slim
RUN apt-get update && apt-get install -y --no-install-recommends libssl3 zlib1g ca-certificates && rm -rf /var/lib/apt/lists/*
COPY --from=build /src/target/release/spanline /usr/local/bin/spanline
COPY pipelines /etc/spanline
EXPOSE 9464
ENTRYPOINT ["spanline"]
