#!/usr/bin/env bash
# Prepares a container engine for `make compose-up-test`: Debian's podman with the settings these
# machines need, and its Docker-compatible API socket for docker-compose. Idempotent.
set -euo pipefail

SOCKET=/run/podman/podman.sock
missing=()
for tool in podman debootstrap docker-compose; do
    command -v "$tool" >/dev/null || missing+=("$tool")
done
if [ ${#missing[@]} -gt 0 ]; then
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}" runc >/dev/null
fi

# Without these, runc fails on setrlimit and on cgroups in these (nested) machines.
if [ ! -f /etc/containers/containers.conf ]; then
    mkdir -p /etc/containers
    cat > /etc/containers/containers.conf <<'CONF'
[containers]
default_ulimits = ["nofile=1024:1024", "nproc=1024:1024"]

[engine]
cgroup_manager = "cgroupfs"
runtime = "runc"
events_logger = "file"
CONF
fi

if ! curl -sf --unix-socket "$SOCKET" http://d/_ping >/dev/null 2>&1; then
    mkdir -p "$(dirname "$SOCKET")"
    nohup podman system service --time=0 "unix://$SOCKET" >/tmp/podman-service.log 2>&1 &
    for _ in $(seq 50); do
        curl -sf --unix-socket "$SOCKET" http://d/_ping >/dev/null 2>&1 && break
        sleep 0.2
    done
fi
curl -sf --unix-socket "$SOCKET" http://d/_ping >/dev/null

# podman runs health checks from systemd timers; with no systemd here, tick them ourselves (every
# 5 s, whatever each check's interval) so that `depends_on: condition: service_healthy` works.
TICKER=/run/podman/healthcheck-ticker.pid
if ! { [ -f "$TICKER" ] && kill -0 "$(cat "$TICKER")" 2>/dev/null; }; then
    nohup bash -c 'while true; do
        for id in $(podman ps -q); do podman healthcheck run "$id" >/dev/null 2>&1 || true; done
        sleep 5
    done' >/dev/null 2>&1 &
    echo $! > "$TICKER"
fi
echo "engine: podman $(podman --version | awk '{print $3}'), DOCKER_HOST=unix://$SOCKET"
