#!/usr/bin/env bash
# Installs shmq from BUILD_DIR into a temporary prefix, extracts the example programs from
# README.md (between the markers "example:begin"/"example:end", "example-topic:begin"/
# "example-topic:end", "example-rpc:begin"/
# "example-rpc:end" and "example-retry:begin"/"example-retry:end"), builds them as an outside
# project with find_package(shmq), and runs them.
# Usage: install_test.sh SOURCE_DIR BUILD_DIR
set -euo pipefail
src=$1
build=$2
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT

cmake --install "$build" --prefix "$work/prefix" >/dev/null
mkdir -p "$work/example"
awk '/<!-- example:begin -->/{on=1; next} /<!-- example:end -->/{on=0} on' "$src/README.md" \
  | sed '/^```/d' > "$work/example/main.cpp"
awk '/<!-- example-rpc:begin -->/{on=1; next} /<!-- example-rpc:end -->/{on=0} on' "$src/README.md" \
  | sed '/^```/d' > "$work/example/rpc.cpp"
awk '/<!-- example-retry:begin -->/{on=1; next} /<!-- example-retry:end -->/{on=0} on' "$src/README.md" \
  | sed '/^```/d' > "$work/example/retry.cpp"
awk '/<!-- example-topic:begin -->/{on=1; next} /<!-- example-topic:end -->/{on=0} on' "$src/README.md" \
  | sed '/^```/d' > "$work/example/topic.cpp"
for f in main.cpp rpc.cpp retry.cpp topic.cpp; do
  if [ ! -s "$work/example/$f" ]; then
    echo "install_test: no example for $f found in README.md" >&2
    exit 1
  fi
done
cat > "$work/example/CMakeLists.txt" <<'CMAKE'
cmake_minimum_required(VERSION 3.20)
project(shmq_readme_example LANGUAGES CXX)
find_package(shmq REQUIRED)
add_executable(example main.cpp)
target_link_libraries(example PRIVATE shmq::shmq)
add_executable(example_rpc rpc.cpp)
target_link_libraries(example_rpc PRIVATE shmq::shmq)
add_executable(example_retry retry.cpp)
target_link_libraries(example_retry PRIVATE shmq::shmq)
add_executable(example_topic topic.cpp)
target_link_libraries(example_topic PRIVATE shmq::shmq)
CMAKE
cmake -S "$work/example" -B "$work/example/build" -G Ninja -DCMAKE_PREFIX_PATH="$work/prefix" \
  -DCMAKE_CXX_FLAGS="-Wall -Wextra -Werror" >/dev/null
ninja -C "$work/example/build" >/dev/null
"$work/example/build/example"
"$work/example/build/example_rpc"
topic_out=$("$work/example/build/example_topic")
printf '%s\n' "$topic_out"
[ "$(printf '%s\n' "$topic_out" | grep -c '^audit: tick ')" = 3 ] || { echo "install_test: topic example: audit did not get 3" >&2; exit 1; }
[ "$(printf '%s\n' "$topic_out" | grep -c '^dashboard: tick ')" = 3 ] || { echo "install_test: topic example: dashboard did not get 3" >&2; exit 1; }
out=$("$work/example/build/example_retry")
printf '%s\n' "$out"
# The retrying producer's guarantee, as the README states it.
[ "$(printf '%s\n' "$out" | grep -c '^received: ')" = 3 ] || { echo "install_test: retry example: not 3 messages" >&2; exit 1; }
printf '%s\n' "$out" | grep -q '^attempt 2: duplicate' || { echo "install_test: retry example: no duplicate" >&2; exit 1; }
printf '%s\n' "$out" | grep -q '^resent after the crash: duplicate' || { echo "install_test: retry example: session resend not a duplicate" >&2; exit 1; }
