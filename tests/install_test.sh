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
add_executable(example_shared main.cpp)
target_link_libraries(example_shared PRIVATE shmq::shmq_shared)
add_executable(example_rpc rpc.cpp)
target_link_libraries(example_rpc PRIVATE shmq::shmq)
add_executable(example_retry retry.cpp)
target_link_libraries(example_retry PRIVATE shmq::shmq)
add_executable(example_topic topic.cpp)
target_link_libraries(example_topic PRIVATE shmq::shmq)
CMAKE
# Boost disabled: find_package(shmq) must not need it (no public header includes it).
cmake -S "$work/example" -B "$work/example/build" -G Ninja -DCMAKE_PREFIX_PATH="$work/prefix" \
  -DCMAKE_DISABLE_FIND_PACKAGE_Boost=ON -DCMAKE_CXX_FLAGS="-Wall -Wextra -Werror" >/dev/null
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

fail() { echo "install_test: $*" >&2; exit 1; }
# links_libshmq FILE: whether the ELF file needs libshmq.so.0.1 (the whole list read first:
# no grep -q closing a pipe early under pipefail).
links_libshmq() {
  local list
  list=$(objdump -p "$1" | awk '$1 == "NEEDED" {print $2}')
  grep -qx libshmq.so.0.1 <<<"$list"
}
prefix=$work/prefix
libdir=$(find "$prefix" -name 'libshmq.so.*.*.*' -printf '%h\n' | head -n 1)
[ -n "$libdir" ] || fail "no libshmq.so.X.Y.Z installed"

# The shared library: its SONAME, and the example linked against it (CMake).
soname=$(objdump -p "$libdir"/libshmq.so | awk '$1 == "SONAME" {print $2}')
[ "$soname" = libshmq.so.0.1 ] || fail "SONAME is '$soname', not libshmq.so.0.1"
[ -e "$libdir/$soname" ] || fail "no $soname link in $libdir"
links_libshmq "$work/example/build/example_shared" \
  || fail "example_shared does not link libshmq.so.0.1"
"$work/example/build/example_shared" >/dev/null || fail "example_shared failed"

# pkg-config: the same example built from `pkg-config --cflags --libs shmq`.
export PKG_CONFIG_PATH="$libdir/pkgconfig"
[ "$(pkg-config --modversion shmq)" = 0.1.0 ] || fail "pkg-config: version is not 0.1.0"
pc_flags=$(pkg-config --cflags --libs shmq)
[ "$(pkg-config --variable=prefix shmq)" = "$prefix" ] || fail "shmq.pc: prefix is not $prefix"
[[ " $(pkg-config --static --libs shmq) " == *" -lxxhash "* ]] || fail "shmq.pc: no -lxxhash for static linking"
# shellcheck disable=SC2086  # the flags are words
c++ -std=c++20 -Wall -Wextra -Werror -o "$work/example/pc_example" "$work/example/main.cpp" \
  $pc_flags -Wl,-rpath,"$libdir"
links_libshmq "$work/example/pc_example" \
  || fail "pkg-config example does not link libshmq.so.0.1"
"$work/example/pc_example" >/dev/null || fail "pkg-config example failed"
# pkg-config --static: libshmq.a (-l:libshmq.a, since -lshmq picks the shared one) with the
# Libs.private it needs.
static_libs=$(pkg-config --static --libs shmq)
static_libs=${static_libs/-lshmq /-l:libshmq.a }
# shellcheck disable=SC2086  # the flags are words
c++ -std=c++20 -Wall -Wextra -Werror -o "$work/example/pc_static" "$work/example/main.cpp" \
  $(pkg-config --cflags shmq) $static_libs
if links_libshmq "$work/example/pc_static"; then fail "the pkg-config --static example links libshmq.so"; fi
"$work/example/pc_static" >/dev/null || fail "pkg-config --static example failed"

# --version on every installed tool.
for tool in shmqd shmqctl shmq-demo; do
  out=$("$prefix/bin/$tool" --version)
  [ "$out" = "$tool 0.1.0" ] || fail "$tool --version printed '$out'"
done

# The systemd unit at PREFIX/lib/systemd/system with PREFIX in its paths; systemd-analyze
# verify reads it without a running systemd (it checks that ExecStart's binary exists).
unit=$prefix/lib/systemd/system/shmqd.service
[ -f "$unit" ] || fail "no $unit"
grep -q "^ExecStart=$prefix/bin/shmqd --data-dir " "$unit" || fail "ExecStart is not $prefix/bin/shmqd"
grep -q "^ExecStopPost=$prefix/bin/shmqd --mark-down " "$unit" || fail "no ExecStopPost --mark-down"
grep -q "^EnvironmentFile=-$prefix/etc/default/shmqd$" "$unit" || fail "EnvironmentFile is not $prefix/etc/default/shmqd"
grep -q '^RestartPreventExitStatus=2$' "$unit" || fail "no RestartPreventExitStatus=2"
[ -f "$prefix/etc/default/shmqd" ] || fail "no $prefix/etc/default/shmqd"
if command -v systemd-analyze >/dev/null; then
  # MANPATH: its Documentation= man pages are looked up with man(1), here under the prefix.
  verify=$(MANPATH=$prefix/share/man systemd-analyze verify "$unit" 2>&1) || fail "systemd-analyze verify: $verify"
  [ -z "$verify" ] || fail "systemd-analyze verify: $verify"
fi

# The manual pages, rendered without a warning.
for page in man1/shmqctl.1.gz man8/shmqd.8.gz; do
  f=$prefix/share/man/$page
  [ -f "$f" ] || fail "no $f"
  warnings=$(man --warnings -l "$f" 2>&1 >/dev/null) || fail "man $f failed"
  [ -z "$warnings" ] || fail "man $f: $warnings"
done
echo "install_test: ok"
