#!/bin/sh
# Prometheus scrapes the API with its API key: the first of API_KEYS (from .env), written where
# the scrape configuration reads it (Prometheus's configuration cannot read the environment).
set -eu
key=$(printf '%s' "${API_KEYS:-}" | cut -d, -f1)
[ -n "$key" ] || { echo "API_KEYS is empty: Prometheus needs a key to scrape the API" >&2; exit 1; }
umask 077
printf '%s' "$key" > /prometheus/api-key
exec prometheus --config.file=/etc/photoembed-monitoring/prometheus.yml \
    --storage.tsdb.path=/prometheus --web.listen-address=:9090 "$@"
