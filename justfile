# ffserve tasks. `just --list` shows them all.

set shell := ["bash", "-euo", "pipefail", "-c"]

# Run the service on the defaults of config.toml.
serve *ARGS: ffmpeg
    python -m ffserve serve --config config.toml {{ARGS}}

# Lint, type-check, then run the whole test suite.
test *ARGS: ffmpeg lint
    python -m pytest {{ARGS}}

# Only the tests (no lint).
pytest *ARGS:
    python -m pytest {{ARGS}}

# ruff, mypy --strict, and the package's layers (import-linter).
lint:
    ruff check ffserve tests bench scripts
    ruff format --check ffserve tests bench scripts
    mypy
    lint-imports

# Format the code.
fmt:
    ruff format ffserve tests bench scripts
    ruff check --fix ffserve tests bench scripts

# Load-test a server (starts one unless --url is given); see README "Benchmarks".
bench *ARGS:
    python -m bench {{ARGS}}

# Build the container image (docker format, so HEALTHCHECK is kept).
image TAG="ffserve" BASE="docker.io/library/debian:bookworm-slim":
    podman build --format docker --build-arg BASE={{BASE}} -t {{TAG}} -f Containerfile . \
        || docker build --build-arg BASE={{BASE}} -t {{TAG}} -f Containerfile .

# Build the image and test it end to end with podman (minutes; not part of `just test`).
image-test:
    scripts/image-test.sh

# The memory.max tests in a QEMU guest with a delegated cgroup v2 (minutes; not in `test`).
cgroup-test *ARGS:
    scripts/cgroup-vm-test.sh {{ARGS}}

# Install FFmpeg with apt if it is missing (Debian/Ubuntu; needs root or sudo).
ffmpeg:
    #!/usr/bin/env bash
    set -euo pipefail
    if command -v ffmpeg >/dev/null && command -v ffprobe >/dev/null; then exit 0; fi
    echo "FFmpeg not found: installing it with apt-get" >&2
    sudo=""; [ "$(id -u)" -eq 0 ] || sudo="sudo"
    $sudo apt-get update -qq && DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq ffmpeg

# N ffserve instances (127.0.0.11..) behind HAProxy on 127.0.0.1:PORT, until Ctrl-C (they drain).
cluster N PORT="8080": ffmpeg haproxy
    python -m scripts.cluster {{N}} --port {{PORT}}

# Install HAProxy with apt if it is missing (Debian/Ubuntu; needs root or sudo).
haproxy:
    #!/usr/bin/env bash
    set -euo pipefail
    if command -v haproxy >/dev/null || [ -x /usr/sbin/haproxy ]; then exit 0; fi
    echo "HAProxy not found: installing it with apt-get" >&2
    sudo=""; [ "$(id -u)" -eq 0 ] || sudo="sudo"
    $sudo apt-get update -qq && DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq haproxy

# Every operation on every file of the generated odd corpus (the default run takes a subset).
test-odd-corpus *ARGS:
    FFSERVE_FULL_ODD_CORPUS=1 python -m pytest tests/e2e/test_odd_corpus.py {{ARGS}}
