#!/usr/bin/env bash
# Installs everything shmq needs to build, test and benchmark, from Debian packages.
# Idempotent: packages already present are not fetched again.
set -euo pipefail

packages=(
  build-essential cmake ninja-build pkg-config
  libboost-dev libconcurrentqueue-dev libgtest-dev libgmock-dev libbenchmark-dev
  libcli11-dev nlohmann-json3-dev libfmt-dev libsystemd-dev libxxhash-dev
  clang-14 libclang-rt-14-dev
  gnuplot-nox
  spin
  # The Debian packages and their test: cpack -G DEB (dpkg-shlibdeps, file), lintian,
  # man --warnings, systemd-analyze verify (systemd is not started by installing it).
  dpkg-dev file lintian man-db groff-base systemd
  pybind11-dev python3-dev python3-pytest
  rabbitmq-server librabbitmq-dev
)

missing=()
for p in "${packages[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if [ "${#missing[@]}" -eq 0 ]; then
  echo "setup: all ${#packages[@]} packages present"
  exit 0
fi

sudo=""
if [ "$(id -u)" -ne 0 ]; then sudo="sudo"; fi
echo "setup: installing ${missing[*]}"
export DEBIAN_FRONTEND=noninteractive
$sudo apt-get update -qq
$sudo apt-get install -y -qq --no-install-recommends "${missing[@]}"
