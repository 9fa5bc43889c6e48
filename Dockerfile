# Build stage: the release binary. Migrations, dataset specs, reference data
# and config/default.toml are compiled into it (include_str!,
# embed_migrations!), so the runtime stage copies nothing but the binary.
FROM rust:1-bookworm AS build
WORKDIR /src

# Dependencies in a layer of their own, rebuilt only when Cargo.toml or
# Cargo.lock change: build them against empty stand-ins for the crate's own
# targets (bench/read_records.rs is declared as an example, so it must exist
# for the manifest to load), then remove the stand-ins' artefacts so the
# real sources are compiled below. cargo-chef does the same with a recipe
# file; this needs no extra tool.
COPY Cargo.toml Cargo.lock ./
RUN mkdir -p src bench \
 && echo 'fn main() {}' > src/main.rs \
 && touch src/lib.rs \
 && echo 'fn main() {}' > bench/read_records.rs \
 && cargo build --release --locked \
 && rm -rf src target/release/carga target/release/deps/carga-* \
           target/release/deps/libcarga-* target/release/.fingerprint/carga-*

COPY src ./src
COPY migrations ./migrations
COPY jobs ./jobs
COPY config ./config
RUN cargo build --release --locked && strip target/release/carga

# Runtime stage: a small Debian with CA certificates and tini, as a non-root
# user.
FROM debian:bookworm-slim
RUN apt-get update \
 && apt-get install -y --no-install-recommends ca-certificates tini \
 && rm -rf /var/lib/apt/lists/* \
 && useradd --system --uid 10001 --home-dir /app --create-home carga
COPY --from=build /src/target/release/carga /usr/local/bin/carga
# Provenance and licence of the reference data compiled into the binary.
COPY jobs/reference/SOURCES.md /usr/share/doc/carga/reference-data-SOURCES.md
USER carga
WORKDIR /app
# The specs compiled in are used unless /app/jobs exists (mount a directory
# of specs there to override them). The distinct-count spill goes to $TMPDIR
# (about 20 bytes per row): with a read-only root filesystem, give /tmp a
# tmpfs or a volume (docker run --read-only --tmpfs /tmp:size=1g …) or set
# CARGA__LOAD__SPILL_DIR to a writable mount.
# Logs are JSON lines on stderr (no TTY) at info, without the libraries'
# chatter; set RUST_LOG to change the level.
# tini is PID 1: it forwards `docker stop`'s SIGTERM to carga, which cancels
# a running load cleanly (rollback, exit 1), and carga, not being PID 1,
# keeps the default action for signals it does not handle (a PID 1 without
# a handler ignores SIGTERM and is killed only after the stop timeout).
ENTRYPOINT ["/usr/bin/tini", "--", "carga"]
# Until the job runner exists (`carga serve`), the image runs one-off
# commands: docker run … carga run novo-bolsa-familia --period 2024-10
CMD ["datasets"]
