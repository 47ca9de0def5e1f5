#!/usr/bin/env bash
# The unsafe boundary (DESIGN "Workspace"): `unsafe` code may appear only in ffi/, hugepages/
# and dataplane/src/io/. Comments and strings do not count. Every block there must carry a
# `// SAFETY:` comment, which clippy's undocumented_unsafe_blocks (deny) enforces.
set -euo pipefail
cd "$(dirname "$0")/.."
bad=$(git ls-files '*.rs' |
  grep -v -E '^(ffi/|hugepages/|dataplane/src/io/)' |
  xargs grep -n -E '(^|[^_[:alnum:]])unsafe[[:space:]]*(\{|fn|impl|extern|trait)' |
  grep -v -E '^[^:]+:[0-9]+:[[:space:]]*//' || true)
if [ -n "$bad" ]; then
  echo "unsafe code outside ffi/, hugepages/ and dataplane/src/io/:" >&2
  echo "$bad" >&2
  exit 1
fi
echo "unsafe: only in ffi/, hugepages/, dataplane/src/io/"
