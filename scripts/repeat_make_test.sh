#!/usr/bin/env bash
# Run `make test` RUNS times in each of PARALLEL fresh clones of HEAD at once, so that
# each run has the others as its concurrent load (issue 14's flakiness check):
#   scripts/repeat_make_test.sh [RUNS] [PARALLEL]    (default 5 and 2: ten runs)
# One log per run and a summary line per run in $OUT (default /tmp/custos-repeat).
set -uo pipefail
runs=${1:-5}
parallel=${2:-2}
out=${OUT:-/tmp/custos-repeat}
repo=$(git -C "$(dirname "$0")/.." rev-parse --show-toplevel)
commit=$(git -C "$repo" rev-parse --short HEAD)
mkdir -p "$out"

loop() {  # one clone, `runs` runs in a row
    local name=$1 dir="$out/clone-$1"
    rm -rf "$dir" && git clone -q "$repo" "$dir" && git -C "$dir" checkout -q "$commit"
    for i in $(seq 1 "$runs"); do
        local start log="$out/$name-$i.log"
        start=$(date +%s)
        (cd "$dir" && make test) > "$log" 2>&1
        local rc=$?
        echo "$name run $i: rc=$rc $(( $(date +%s) - start )) s, load $(cut -d' ' -f1-3 /proc/loadavg):" \
            "$(grep -E 'passed|failed' "$log" | tail -1)" >> "$out/summary"
    done
}

echo "commit $commit: $parallel clones x $runs runs of make test" > "$out/summary"
for p in $(seq 1 "$parallel"); do loop "$p" & done
wait
cat "$out/summary"
! grep -q "rc=[^0]" "$out/summary"
