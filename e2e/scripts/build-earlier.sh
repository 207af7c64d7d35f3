#!/usr/bin/env bash
# Builds ferrolb as it was at an earlier commit of this repository (the one an
# upgrade test starts from) into an ignored cache folder, once per commit:
# its source tree (config/, charts/, everything `git archive` holds) in
# src/ and its operator, speaker and webhook in bin/. Needs the commit in
# this clone's history. Prints the folder on its last line.
#   build-earlier.sh COMMIT
set -euo pipefail

commit=${1:?usage: build-earlier.sh COMMIT}
root=$(cd "$(dirname "$0")/../.." && pwd)
cache=${FERROLB_CACHE:-$root/.cache}
out="$cache/earlier/$commit"

if [ -x "$out/bin/ferrolb-operator" ] && [ -x "$out/bin/ferrolb-speaker" ] \
    && [ -x "$out/bin/ferrolb-webhook" ] && [ -d "$out/src/config" ]; then
  echo "$out"
  exit 0
fi

if ! git -C "$root" cat-file -e "$commit^{commit}" 2>/dev/null; then
  echo "commit $commit is not in this clone's history (a shallow clone?): the upgrade test builds ferrolb from it; run 'git fetch --unshallow'" >&2
  exit 1
fi
tmp="$out.tmp.$$"
rm -rf "$tmp"
mkdir -p "$tmp/src" "$tmp/bin"
git -C "$root" archive "$commit" | tar -x -C "$tmp/src"
echo "building ferrolb at $commit into $out (first time only)" >&2
start=$(date +%s)
# A target folder of its own, shared by every earlier commit built here.
(cd "$tmp/src" && CARGO_TARGET_DIR="$cache/earlier/target" \
  "${CARGO:-cargo}" build --quiet --locked \
  -p ferrolb-operator -p ferrolb-speaker -p ferrolb-webhook --bins)
for binary in ferrolb-operator ferrolb-speaker ferrolb-webhook; do
  cp "$cache/earlier/target/debug/$binary" "$tmp/bin/"
done
rm -rf "$out"
mv "$tmp" "$out"
echo "ferrolb at $commit built in $(( $(date +%s) - start ))s" >&2
echo "$out"
