#!/usr/bin/env bash
# Installs shmq from BUILD_DIR into a temporary prefix, extracts the example program from
# README.md (between the "example:begin" and "example:end" markers), builds it as an outside
# project with find_package(shmq), and runs it.
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
if [ ! -s "$work/example/main.cpp" ]; then
  echo "install_test: no example found in README.md" >&2
  exit 1
fi
cat > "$work/example/CMakeLists.txt" <<'CMAKE'
cmake_minimum_required(VERSION 3.20)
project(shmq_readme_example LANGUAGES CXX)
find_package(shmq REQUIRED)
add_executable(example main.cpp)
target_link_libraries(example PRIVATE shmq::shmq)
CMAKE
cmake -S "$work/example" -B "$work/example/build" -G Ninja -DCMAKE_PREFIX_PATH="$work/prefix" \
  -DCMAKE_CXX_FLAGS="-Wall -Wextra -Werror" >/dev/null
ninja -C "$work/example/build" >/dev/null
"$work/example/build/example"
