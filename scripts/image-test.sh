#!/usr/bin/env bash
# Build the image and test it end to end with podman (`just image-test`; not in CI: it
# takes minutes, podman and root). Where no container registry is reachable, the Debian
# base image is made here with debootstrap and imported.
set -euo pipefail
cd "$(dirname "$0")/.."

TAG=${TAG:-localhost/ffserve:test}
BASE=${BASE:-}
NAME=ffserve-image-test
# This machine's podman needs explicit limits (its defaults are too low for bubblewrap).
LIMITS=(--ulimit nofile=20000:20000 --ulimit nproc=32768:32768)
SANDBOX=(--security-opt seccomp=unconfined --security-opt apparmor=unconfined
         --security-opt "unmask=/proc/*")
# crun refuses this machine's hybrid cgroup v1/v2 layout; runc (Debian package) does not.
if command -v runc >/dev/null; then podman() { command podman --runtime runc "$@"; }; fi

if [ -z "$BASE" ]; then
    if podman pull -q docker.io/library/debian:bookworm-slim >/dev/null 2>&1; then
        BASE=docker.io/library/debian:bookworm-slim
    else
        BASE=localhost/debian-bookworm-minbase
        if ! podman image exists "$BASE"; then
            root=/var/tmp/ffserve-debootstrap
            [ -x "$root/bin/sh" ] || debootstrap --variant=minbase bookworm "$root" http://deb.debian.org/debian
            tar -C "$root" -c . | podman import - "$BASE"
        fi
    fi
fi
echo "== base: $BASE"
BUILD=(--build-arg "BASE=$BASE")
if [ -n "${PIP_CERT:-}" ]; then  # the host reaches PyPI through a proxy with its own CA
    BUILD+=(-v "$PIP_CERT:/run/pip-ca.crt:ro" --build-arg PIP_CERT=/run/pip-ca.crt)
fi
podman build --format docker "${LIMITS[@]}" "${BUILD[@]}" -t "$TAG" -f Containerfile .
podman image inspect "$TAG" --format 'image size: {{.Size}} bytes; healthcheck: {{.Config.Healthcheck.Test}}'

podman rm -f "$NAME" >/dev/null 2>&1 || true
secret=$(mktemp /tmp/ffserve-jwt.XXXXXX)
trap 'podman rm -f "$NAME" >/dev/null 2>&1 || true; rm -f "$secret"' EXIT
head -c 48 /dev/urandom | base64 >"$secret"
chmod 644 "$secret"  # the server runs as uid 10001 in the container
SECRET=(-v "$secret:/run/secrets/ffserve-jwt:ro")

echo "== without a token key the image refuses to start (auth is on by default)"
if podman run --rm "${LIMITS[@]}" "${SANDBOX[@]}" "$TAG" >/tmp/ffserve-nokey.log 2>&1; then
    echo "FAIL: started with auth on and no key"; exit 1
fi
tail -n 1 /tmp/ffserve-nokey.log
grep -q "secret" /tmp/ffserve-nokey.log || { echo "FAIL: the refusal does not name the key"; exit 1; }

echo "== without the sandbox options the image refuses to start"
if podman run --rm "${LIMITS[@]}" "${SECRET[@]}" "$TAG" >/tmp/ffserve-nosandbox.log 2>&1; then
    echo "FAIL: started without a working sandbox"; exit 1
fi
tail -n 2 /tmp/ffserve-nosandbox.log

echo "== run"
podman run -d --name "$NAME" "${LIMITS[@]}" "${SANDBOX[@]}" "${SECRET[@]}" \
    -p 127.0.0.1:18080:8080 -p 127.0.0.1:18081:8081 "$TAG" >/dev/null
for _ in $(seq 100); do
    curl -fsS http://127.0.0.1:18081/health >/tmp/ffserve-health-open.json 2>/dev/null && break
    sleep 0.2
done
echo "/health without a token: $(cat /tmp/ffserve-health-open.json)"
grep -q '"namespaces"' /tmp/ffserve-health-open.json && { echo "FAIL: details without a token"; exit 1; }
token=$(podman exec "$NAME" ffserve token --sub image-test --ttl 600 --config /app/config.toml)
curl -fsS -H "Authorization: Bearer $token" http://127.0.0.1:18081/health >/tmp/ffserve-health.json
python3 -m json.tool /tmp/ffserve-health.json
grep -q '"namespaces": true' /tmp/ffserve-health.json || { echo "FAIL: sandbox not active"; exit 1; }
uid=$(podman exec "$NAME" id -u)
echo "server uid in the container: $uid"
[ "$uid" != 0 ] || { echo "FAIL: runs as root"; exit 1; }

echo "== a real job from the host, then a running FFmpeg inspected"
code=$(curl -s -o /dev/null -w '%{http_code}' -H "Connection: Upgrade" -H "Upgrade: websocket" \
    -H "Sec-WebSocket-Version: 13" -H "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==" \
    http://127.0.0.1:18080/)
echo "upgrade without a token: HTTP $code"
[ "$code" = 401 ] || { echo "FAIL: expected 401"; exit 1; }
python scripts/image_job.py ws://127.0.0.1:18080/ "$NAME" "$token"

echo "== podman stop -t 30 with a job running: it finishes or is told SHUTTING_DOWN, close 1001, exit 0"
python scripts/image_job.py hold ws://127.0.0.1:18080/ "$token" >/tmp/ffserve-drain.log 2>&1 &
holder=$!
for _ in $(seq 300); do grep -q RUNNING /tmp/ffserve-drain.log && break; sleep 0.1; done
grep -q RUNNING /tmp/ffserve-drain.log || { cat /tmp/ffserve-drain.log; echo "FAIL: no job running"; exit 1; }
start=$(date +%s.%N)
podman stop -t 30 "$NAME" >/dev/null
code=$(podman inspect "$NAME" --format '{{.State.ExitCode}}')
printf 'stopped in %.1f s, exit code %s\n' "$(echo "$(date +%s.%N) - $start" | bc)" "$code"
wait "$holder" || true
cat /tmp/ffserve-drain.log
podman logs "$NAME" 2>&1 | tail -n 4
[ "$code" = 0 ] || { echo "FAIL: exit code $code"; exit 1; }
grep -qE 'server said: (completed|error SHUTTING_DOWN)' /tmp/ffserve-drain.log || { echo "FAIL: the job's end was not told"; exit 1; }
grep -q "closed: 1001" /tmp/ffserve-drain.log || { echo "FAIL: no close 1001"; exit 1; }
echo "image-test: PASSED"
