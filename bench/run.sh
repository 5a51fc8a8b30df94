#!/usr/bin/env bash
# bench/run.sh: every benchmark, each reporting ratios against a raw baseline
# measured in the same process. Pinned to one CPU for stable latency figures
# (a process woken on the other CPU pays ~25 us more). Compare medians of
# several runs; never read a single figure as truth.
set -u
cd "$(dirname "$0")/.."
BUILD=${BUILD:-build}
runs=${BENCH_RUNS:-3}
for i in $(seq 1 "$runs"); do
  echo "== run $i"
  taskset -c 0 "$BUILD/bench/bench_rpc" 20000
done
