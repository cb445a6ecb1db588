#!/usr/bin/env bash
# Builds the project's images (targets api, worker and worker-cuda) from the unchanged
# Dockerfile.worker with podman, as docker-compose.yml names them. Here no hub and no PyTorch index can be reached, so
# the build arguments take torch from this machine's wheel folders (wheel_index.py) and skip the
# weights download (the test mounts its model cache). Writes build times and image sizes to
# test-artifacts/compose-build.json.
set -euo pipefail
cd "$(dirname "$0")/../.."

index_pid=
if [ -z "${TORCH_INDEX_URL:-}" ]; then
    # A fixed port: the URL is a build argument, and a new one would invalidate the torch layer.
    port=${WHEEL_INDEX_PORT:-38471}
    python3 tests/compose/wheel_index.py "$port" /opt/pypi-more /opt/pypi &
    index_pid=$!
    trap 'kill $index_pid 2>/dev/null || true' EXIT
    TORCH_INDEX_URL="http://127.0.0.1:$port/simple"
    sleep 1
fi

mkdir -p test-artifacts
results="{"
# target:image (the gpu profile's worker is the worker-cuda target)
for build in api:photoembed-api worker:photoembed-worker worker-cuda:photoembed-worker-gpu; do
    target=${build%%:*} image=${build#*:}
    started=$(date +%s)
    podman build --network host -f Dockerfile.worker --target "$target" \
        --build-arg TORCH_INDEX_URL="$TORCH_INDEX_URL" --build-arg DOWNLOAD_MODEL=0 \
        -t "$image" . >"test-artifacts/compose-build-$target.log" 2>&1 ||
        { tail -40 "test-artifacts/compose-build-$target.log"; exit 1; }
    seconds=$(( $(date +%s) - started ))
    size=$(podman image inspect "$image" --format '{{.Size}}')
    echo "built $image in ${seconds}s, $(( size / 1000000 )) MB"
    results+="\"$target\": {\"build_seconds\": $seconds, \"size_bytes\": $size},"
done
# The monitoring profile's image: Prometheus and Alertmanager from Debian's packages.
started=$(date +%s)
podman build --network host -t photoembed-monitoring monitoring \
    >test-artifacts/compose-build-monitoring.log 2>&1 ||
    { tail -40 test-artifacts/compose-build-monitoring.log; exit 1; }
echo "built photoembed-monitoring in $(( $(date +%s) - started ))s"
results+="\"monitoring\": {\"build_seconds\": $(( $(date +%s) - started ))},"
echo "${results%,}}" > test-artifacts/compose-build.json
# Earlier builds' images (6+ GB each with CUDA torch) would fill the disk over a few runs.
podman image prune -f >/dev/null
