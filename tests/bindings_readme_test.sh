#!/usr/bin/env bash
# The README's C and Python examples ("C and Python") are exactly examples/example.c and
# python/examples/example.py, which the test suite builds and runs.
# Usage: bindings_readme_test.sh SOURCE_DIR
set -euo pipefail
src=$1
status=0
check() {  # check MARKER FILE
  local block
  block=$(awk "/<!-- $1:begin -->/{on=1; next} /<!-- $1:end -->/{on=0} on" "$src/README.md" |
          sed '/^```/d')
  if [ -z "$block" ]; then
    echo "bindings_readme_test: no '$1' block in README.md" >&2
    status=1
  elif ! diff -u "$src/$2" <(printf '%s\n' "$block") >&2; then
    echo "bindings_readme_test: README.md's '$1' block differs from $2 (above)" >&2
    status=1
  fi
}
check example-c examples/example.c
check example-py python/examples/example.py
exit $status
