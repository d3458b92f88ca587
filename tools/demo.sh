#!/usr/bin/env bash
# The demo command: installs dependencies, builds shmq (Release) and runs shmq-demo, a
# producer process and a consumer process exchanging messages through one queue.
# Arguments are passed to shmq-demo (try --help).
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
cd "$root"
tools/install-deps.sh
cmake -S . -B build/release -G Ninja -DCMAKE_BUILD_TYPE=Release >/dev/null
ninja -C build/release shmq-demo shmqd >/dev/null
exec build/release/tools/shmq-demo "$@"
