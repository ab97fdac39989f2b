# One image with both binaries: `pg_flo` (replicator / worker) and `pg-flo-operator`. The Helm
# chart runs the operator with `command: [pg-flo-operator]` and passes this same image as the
# runtime image, so operator and runtime versions never skew.
#
#   docker build -t pg-flo:dev .
#   docker run --rm pg-flo:dev version
#   docker run --rm --entrypoint pg-flo-operator pg-flo:dev crd

FROM rust:1-bookworm AS build
WORKDIR /src
COPY . .
ARG PG_FLO_COMMIT=none
ARG PG_FLO_BUILD_DATE=unknown
ENV PG_FLO_COMMIT=${PG_FLO_COMMIT} PG_FLO_BUILD_DATE=${PG_FLO_BUILD_DATE}
RUN cargo build --release --locked -p pg_flo -p pg-flo-operator --bins \
 && mkdir -p /out \
 && find target/release -maxdepth 1 -type f -executable \( -name pg_flo -o -name pg-flo-operator \) -exec cp {} /out/ \;

# pg_dump and psql (for --target-sync-schema) come from Debian's PostgreSQL client package
# (15 on bookworm). pg_dump must be at least as new as the source server: for newer sources,
# build on a base that ships a newer client.
FROM debian:bookworm-slim
RUN apt-get update \
 && apt-get install -y --no-install-recommends ca-certificates postgresql-client \
 && rm -rf /var/lib/apt/lists/* \
 && useradd --system --uid 65532 --home /nonexistent --shell /usr/sbin/nologin pgflo
COPY --from=build /out/ /usr/local/bin/
USER 65532:65532
ENTRYPOINT ["pg_flo"]
