# One image with both binaries: `pg_flo` (replicator / worker) and `pg-flo-operator`. The Helm
# chart runs the operator with `command: [pg-flo-operator]` and passes this same image as the
# runtime image, so operator and runtime versions never skew.
#
#   docker build -t pg-flo:dev .
#   docker run --rm pg-flo:dev version
#   docker run --rm --entrypoint pg-flo-operator pg-flo:dev crd
#
# Base images: BUILD_IMAGE and RUNTIME_IMAGE. They are tags here because their digests cannot be
# looked up where this file is maintained (no registry access), and a made-up digest would fail
# every build. For a reproducible release, pin both by digest:
#
#   docker buildx imagetools inspect rust:1-bookworm --format '{{json .Manifest.Digest}}'
#   docker buildx imagetools inspect debian:bookworm-slim --format '{{json .Manifest.Digest}}'
#   docker build \
#     --build-arg BUILD_IMAGE=rust:1-bookworm@sha256:<digest> \
#     --build-arg RUNTIME_IMAGE=debian:bookworm-slim@sha256:<digest> -t pg-flo:<version> .
#
# and deploy the result by digest too (chart value image.digest).
ARG BUILD_IMAGE=rust:1-bookworm
ARG RUNTIME_IMAGE=debian:bookworm-slim

FROM ${BUILD_IMAGE} AS build
WORKDIR /src
COPY . .
ARG PG_FLO_COMMIT=none
ARG PG_FLO_BUILD_DATE=unknown
ENV PG_FLO_COMMIT=${PG_FLO_COMMIT} PG_FLO_BUILD_DATE=${PG_FLO_BUILD_DATE}
RUN cargo build --release --locked -p pg_flo -p pg-flo-operator --bins \
 && mkdir -p /out \
 && find target/release -maxdepth 1 -type f -executable \( -name pg_flo -o -name pg-flo-operator \) -exec cp {} /out/ \;

# pg_dump and psql (for --target-sync-schema) come from the PostgreSQL project's own Debian
# repository (apt.postgresql.org), version 17: pg_dump refuses servers newer than itself and
# dumps every older one, so sources on PostgreSQL 12 to 17 work (Debian's own client is 15).
FROM ${RUNTIME_IMAGE}
ARG PG_CLIENT_MAJOR=17
RUN apt-get update \
 && apt-get install -y --no-install-recommends ca-certificates curl \
 && install -d /usr/share/postgresql-common/pgdg \
 && curl -fsSL -o /usr/share/postgresql-common/pgdg/apt.postgresql.org.asc \
      https://www.postgresql.org/media/keys/ACCC4CF8.asc \
 && echo "deb [signed-by=/usr/share/postgresql-common/pgdg/apt.postgresql.org.asc] https://apt.postgresql.org/pub/repos/apt bookworm-pgdg main" \
      > /etc/apt/sources.list.d/pgdg.list \
 && apt-get update \
 && apt-get install -y --no-install-recommends "postgresql-client-${PG_CLIENT_MAJOR}" \
 && apt-get purge -y curl && apt-get autoremove -y \
 && rm -rf /var/lib/apt/lists/* \
 && useradd --system --uid 65532 --home /nonexistent --shell /usr/sbin/nologin pgflo
ARG PG_FLO_COMMIT=none
ARG PG_FLO_BUILD_DATE=unknown
LABEL org.opencontainers.image.title="pg_flo" \
      org.opencontainers.image.description="PostgreSQL CDC (replicator, worker) and its Kubernetes operator" \
      org.opencontainers.image.licenses="Apache-2.0" \
      org.opencontainers.image.revision="${PG_FLO_COMMIT}" \
      org.opencontainers.image.created="${PG_FLO_BUILD_DATE}"
COPY --from=build /out/ /usr/local/bin/
USER 65532:65532
ENTRYPOINT ["pg_flo"]
