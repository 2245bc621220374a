#!/usr/bin/env bash
# A benchmark of this checkout against an earlier commit, run interleaved on the same machine:
#   bench/against.sh <commit> [runs] [bench script and its arguments]
#   bench/against.sh HEAD~3 4 bench/throughput.py --peers none
# Each side runs from its own git worktree (in a temporary directory) with PYTHONPATH at its own
# src/, so the nodes it starts import that side's code; the venv is this checkout's. Prints each
# run's last line, side by side. Runs alternate (before, after, before, …) so that drift in the
# machine's load falls on both.
set -euo pipefail
cd "$(dirname "$0")/.."
rev=${1:?usage: bench/against.sh <commit> [runs] [script args...]}
runs=${2:-4}
shift $(( $# >= 2 ? 2 : 1 ))
[ $# -gt 0 ] || set -- bench/throughput.py --peers none
work=$(mktemp -d)
trap 'git worktree remove --force "$work/before" >/dev/null 2>&1 || true; rm -rf "$work"' EXIT
git worktree add --detach -q "$work/before" "$rev"
python=$PWD/.venv/bin/python
for i in $(seq 1 "$runs"); do
  for side in before after; do
    dir=$PWD; [ "$side" = before ] && dir=$work/before
    line=$(cd "$dir" && PYTHONPATH="$dir/src" "$python" "$@" 2>&1 | tail -1)
    echo "$side $i: $line"
  done
done
