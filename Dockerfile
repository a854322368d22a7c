# lsnpipe container image: built with the Rust toolchain, run on a slim Debian.
#
#   docker build -t lsnpipe .
#   docker run --rm lsnpipe --help
#
# Settings come from LSNPIPE_* variables (or a mounted lsnpipe.toml and --config); passwords from
# PGPASSWORD or a mounted passfile (PGPASSFILE), never baked into the image.

FROM rust:1-bookworm AS build
WORKDIR /src
COPY . .
RUN cargo build --release --locked --bin lsnpipe

FROM debian:bookworm-slim
RUN apt-get update \
    && apt-get install -y --no-install-recommends ca-certificates \
    && rm -rf /var/lib/apt/lists/* \
    && useradd --system --no-create-home --shell /usr/sbin/nologin lsnpipe
COPY --from=build /src/target/release/lsnpipe /usr/local/bin/lsnpipe
USER lsnpipe
# /metrics, /healthz, /readyz
EXPOSE 9930
ENV LSNPIPE_METRICS_LISTEN=0.0.0.0:9930
ENTRYPOINT ["lsnpipe"]
CMD ["run"]
