# syntax=docker/dockerfile:1
# Build stage: the release binary (migrations, dataset specs, reference data
# and default config are compiled in).
FROM rust:1-bookworm AS build
WORKDIR /src
COPY Cargo.toml Cargo.lock ./
COPY src ./src
COPY migrations ./migrations
COPY jobs ./jobs
COPY config ./config
RUN cargo build --release --locked && strip target/release/carga

# Runtime stage: a small Debian with CA certificates, as a non-root user.
FROM debian:bookworm-slim
RUN apt-get update \
 && apt-get install -y --no-install-recommends ca-certificates \
 && rm -rf /var/lib/apt/lists/* \
 && useradd --system --uid 10001 --home-dir /app --create-home carga
COPY --from=build /src/target/release/carga /usr/local/bin/carga
COPY --chown=carga:carga jobs /app/jobs
COPY --chown=carga:carga config /app/config
USER carga
WORKDIR /app
ENV RUST_LOG=info
ENTRYPOINT ["carga"]
# Until the job runner exists (`carga serve`), the image runs one-off
# commands: docker run … carga run novo-bolsa-familia --period 2024-10
CMD ["datasets"]
