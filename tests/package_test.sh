#!/usr/bin/env bash
# Builds the Debian packages from BUILD_DIR with CPack (into a temporary dir: the build dir
# gets no package files), and checks them:
#   - the three packages, their names, versions and Depends (dpkg-deb -f);
#   - extracted into a scratch root (dpkg -x): the SONAME of libshmq, shmqctl/shmqd
#     --version, the unit at /lib/systemd/system with /usr/bin/shmqd in ExecStart, verified
#     by systemd-analyze, /etc/default/shmqd a conffile, the
#     maintainer scripts, the manual pages; the README's example built with pkg-config
#     against the extracted libshmq-dev and run against the extracted libshmq;
#   - lintian: no error tag but no-copyright-file (the warnings that remain are printed,
#     README "Operations");
#   - only as root with SHMQ_TEST_DPKG_INSTALL=1 (CI, a throwaway machine): a real
#     `dpkg -i` of the three, the shmq user and /var/lib/shmq, the installed tools, then
#     `dpkg --purge` and that nothing is left. Skipped if any shmq package, file or user is
#     already on the machine: the test never touches what it did not make.
# Usage: package_test.sh SOURCE_DIR BUILD_DIR
set -euo pipefail
src=$1
build=$2
work=$(mktemp -d)
installed_here=0
cleanup() {
  if [ "$installed_here" = 1 ]; then
    dpkg --purge shmq-tools libshmq-dev libshmq >/dev/null 2>&1 || true
  fi
  rm -rf "$work"
}
trap cleanup EXIT
fail() { echo "package_test: $*" >&2; exit 1; }

version=$(sed -n 's/^project(shmq VERSION \([0-9.]*\).*/\1/p' "$src/CMakeLists.txt")
[ -n "$version" ] || fail "no project version in $src/CMakeLists.txt"
debver=$version-1
soname=libshmq.so.$(cut -d. -f1,2 <<<"$version")
arch=$(dpkg --print-architecture)

# --- build ------------------------------------------------------------------------------
if ! cpack -G DEB --config "$build/CPackConfig.cmake" -B "$work/pkgs" >"$work/cpack.log" 2>&1; then
  tail -n 30 "$work/cpack.log" >&2
  fail "cpack failed"
fi
for p in libshmq libshmq-dev shmq-tools; do
  [ -f "$work/pkgs/${p}_${debver}_${arch}.deb" ] || fail "no ${p}_${debver}_${arch}.deb (got: $(ls "$work/pkgs"))"
done
deb() { echo "$work/pkgs/${1}_${debver}_${arch}.deb"; }

# --- control fields ---------------------------------------------------------------------
field() { dpkg-deb -f "$(deb "$1")" "$2"; }
for p in libshmq libshmq-dev shmq-tools; do
  [ "$(field "$p" Package)" = "$p" ] || fail "$p: Package is '$(field "$p" Package)'"
  [ "$(field "$p" Version)" = "$debver" ] || fail "$p: Version is '$(field "$p" Version)'"
done
depends_on() {  # depends_on PACKAGE DEP: DEP is one of PACKAGE's Depends (any version)
  local list
  list=$(field "$1" Depends | tr ',' '\n' | sed 's/^ *//; s/ .*//')
  grep -qx "$2" <<<"$list" || fail "$1: Depends '$(field "$1" Depends)' lacks $2"
}
[[ "$(field libshmq-dev Depends)" == *"libshmq (= $debver)"* ]] \
  || fail "libshmq-dev: Depends '$(field libshmq-dev Depends)' lacks libshmq (= $debver)"
depends_on libshmq-dev libxxhash-dev
depends_on libshmq libxxhash0
depends_on libshmq libstdc++6
depends_on shmq-tools adduser
depends_on shmq-tools libsystemd0
depends_on shmq-tools libc6

# --- contents, extracted into a scratch root --------------------------------------------
root=$work/root
for p in libshmq libshmq-dev shmq-tools; do dpkg -x "$(deb "$p")" "$root"; done
contents() { dpkg-deb -c "$(deb "$1")" | awk '{print $6}' | sed 's|^\./|/|'; }
has() {  # has PACKAGE PATH
  local list
  list=$(contents "$1")
  grep -qx "$2" <<<"$list" || fail "$1 does not ship $2"
}
lib=$(contents libshmq | grep -E "/libshmq\.so\.$version\$" || true)
[ -n "$lib" ] || fail "libshmq ships no libshmq.so.$version"
libdir=$(dirname "$lib")
has libshmq "$libdir/$soname"
has libshmq-dev "$libdir/libshmq.so"
has libshmq-dev "$libdir/libshmq.a"
has libshmq-dev "$libdir/pkgconfig/shmq.pc"
has libshmq-dev "$libdir/cmake/shmq/shmqConfig.cmake"
has libshmq-dev /usr/include/shmq/shmq.hpp
has shmq-tools /usr/bin/shmqd
has shmq-tools /usr/bin/shmqctl
has shmq-tools /lib/systemd/system/shmqd.service
has shmq-tools /etc/default/shmqd
has shmq-tools /usr/share/man/man1/shmqctl.1.gz
has shmq-tools /usr/share/man/man8/shmqd.8.gz
if contents libshmq | grep -q /usr/bin/; then fail "libshmq ships programs"; fi
got=$(objdump -p "$root$lib" | awk '$1 == "SONAME" {print $2}')
[ "$got" = "$soname" ] || fail "SONAME of $lib is '$got', not $soname"

# The tools, as installed (linked with libshmq.a: no library path needed).
for tool in shmqctl shmqd; do
  out=$("$root/usr/bin/$tool" --version)
  [ "$out" = "$tool $version" ] || fail "$tool --version printed '$out'"
done

# The unit: /usr/bin/shmqd, its settings file, no restart on a configuration error.
unit=$root/lib/systemd/system/shmqd.service
grep -q '^ExecStart=/usr/bin/shmqd --data-dir ' "$unit" || fail "ExecStart is not /usr/bin/shmqd"
grep -q '^ExecStopPost=/usr/bin/shmqd --mark-down ' "$unit" || fail "no ExecStopPost=/usr/bin/shmqd --mark-down"
grep -q '^EnvironmentFile=-/etc/default/shmqd$' "$unit" || fail "EnvironmentFile is not /etc/default/shmqd"
grep -q '^RestartPreventExitStatus=2$' "$unit" || fail "no RestartPreventExitStatus=2"
grep -q '^User=shmq$' "$unit" || fail "the unit does not run as shmq"
# systemd-analyze verify (no running systemd needed) checks that the programs exist: a copy
# of the unit with /usr/bin moved into the scratch root, and its Documentation= pages found
# by man(1) there. (--root would look for every unit it pulls in, sysinit.target and all,
# in the scratch root too.)
mkdir "$work/unit"
sed "s|/usr/bin/shmqd|$root/usr/bin/shmqd|g" "$unit" >"$work/unit/shmqd.service"
verify=$(MANPATH=$root/usr/share/man systemd-analyze verify "$work/unit/shmqd.service" 2>&1) \
  || fail "systemd-analyze verify: $verify"
[ -z "$verify" ] || fail "systemd-analyze verify: $verify"

# Control files: the conffile and the maintainer scripts.
mkdir "$work/control"
dpkg-deb -e "$(deb shmq-tools)" "$work/control"
grep -qx /etc/default/shmqd "$work/control/conffiles" || fail "/etc/default/shmqd is not a conffile"
for s in postinst prerm postrm; do
  [ -x "$work/control/$s" ] || fail "shmq-tools has no executable $s"
  sh -n "$work/control/$s" || fail "$s: syntax error"
done

# Manual pages, rendered without a warning.
for page in man1/shmqctl.1.gz man8/shmqd.8.gz; do
  warnings=$(man --warnings -l "$root/usr/share/man/$page" 2>&1 >/dev/null) || fail "man $page failed"
  [ -z "$warnings" ] || fail "man $page: $warnings"
done

# The README's example against the extracted packages, with pkg-config (--define-prefix:
# the prefix from where shmq.pc lies in the scratch root, not the /usr written in it).
awk '/<!-- example:begin -->/{on=1; next} /<!-- example:end -->/{on=0} on' "$src/README.md" \
  | sed '/^```/d' > "$work/main.cpp"
[ -s "$work/main.cpp" ] || fail "no example in README.md"
flags=$(PKG_CONFIG_PATH="$root$libdir/pkgconfig" pkg-config --define-prefix --cflags --libs shmq)
[[ "$flags" == *"-I$root/usr/include"* ]] || fail "pkg-config gave '$flags'"
# shellcheck disable=SC2086  # the flags are words
c++ -std=c++20 -Wall -Wextra -Werror -o "$work/example" "$work/main.cpp" $flags
LD_LIBRARY_PATH="$root$libdir" "$work/example" >/dev/null || fail "the example failed against the packages"

# --- lintian ----------------------------------------------------------------------------
if command -v lintian >/dev/null; then
  # no-copyright-file: the repository states no license yet, and a copyright file must name
  # one; the only error left (README "Operations").
  lintian --tag-display-limit 0 --suppress-tags no-copyright-file "$work"/pkgs/*.deb \
    >"$work/lintian.txt" 2>&1 || true
  if grep -q '^E: ' "$work/lintian.txt"; then
    grep '^E: ' "$work/lintian.txt" >&2
    fail "lintian reports errors"
  fi
  echo "package_test: lintian: $(grep -c '^W: ' "$work/lintian.txt" || true) warning(s)"
  grep '^W: ' "$work/lintian.txt" | head -n 40 || true
else
  echo "package_test: lintian not installed: not run"
fi

# --- a real installation (root, SHMQ_TEST_DPKG_INSTALL=1) -------------------------------
if [ "$(id -u)" = 0 ] && [ "${SHMQ_TEST_DPKG_INSTALL:-0}" = 1 ]; then
  for p in libshmq libshmq-dev shmq-tools; do
    if dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q installed; then
      fail "$p is already installed here: not installing over it"
    fi
  done
  for f in /usr/bin/shmqd /usr/bin/shmqctl /lib/systemd/system/shmqd.service /etc/default/shmqd /var/lib/shmq; do
    [ ! -e "$f" ] || fail "$f exists here: not installing over it"
  done
  getent passwd shmq >/dev/null && fail "a user shmq exists here: the purge would remove it"
  getent group shmq >/dev/null && fail "a group shmq exists here: the purge would remove it"
  installed_here=1
  dpkg -i "$(deb libshmq)" "$(deb libshmq-dev)" "$(deb shmq-tools)" >"$work/dpkg.log" 2>&1 \
    || { cat "$work/dpkg.log" >&2; fail "dpkg -i failed"; }
  [ "$(/usr/bin/shmqctl --version)" = "shmqctl $version" ] || fail "installed shmqctl --version"
  getent passwd shmq >/dev/null || fail "postinst made no user shmq"
  getent group shmq >/dev/null || fail "postinst made no group shmq"
  [ "$(stat -c '%U:%G %a' /var/lib/shmq)" = "shmq:shmq 750" ] \
    || fail "/var/lib/shmq is $(stat -c '%U:%G %a' /var/lib/shmq)"
  verify=$(systemd-analyze verify /lib/systemd/system/shmqd.service 2>&1) || fail "systemd-analyze verify: $verify"
  [ -z "$verify" ] || fail "systemd-analyze verify (installed): $verify"
  # The installed shmqd as the unit runs it, with its settings empty: a configuration
  # error, exit 2 (which the unit does not restart).
  rc=0
  runuser -u shmq -- /usr/bin/shmqd --data-dir /var/lib/shmq 2>/dev/null || rc=$?
  [ "$rc" = 2 ] || fail "shmqd without queues exited $rc, not 2"
  # Installed again over itself: the scripts are idempotent.
  dpkg -i "$(deb shmq-tools)" >"$work/dpkg.log" 2>&1 || { cat "$work/dpkg.log" >&2; fail "dpkg -i again failed"; }
  dpkg --purge shmq-tools libshmq-dev libshmq >"$work/dpkg.log" 2>&1 \
    || { cat "$work/dpkg.log" >&2; fail "dpkg --purge failed"; }
  installed_here=0
  for f in /usr/bin/shmqd /lib/systemd/system/shmqd.service /etc/default/shmqd /var/lib/shmq "$libdir/$soname"; do
    [ ! -e "$f" ] || fail "$f is left after the purge"
  done
  if getent passwd shmq >/dev/null; then fail "user shmq is left after the purge"; fi
  if getent group shmq >/dev/null; then fail "group shmq is left after the purge"; fi
  echo "package_test: dpkg -i, the installed tools and dpkg --purge: ok"
fi
echo "package_test: ok"
