#!/usr/bin/env bash
# Summarise the per-commit latency log of a run (`RUST_LOG=info,lsnpipe::latency=debug`, kept by
# `LSNPIPE_LOG_KEEP=FILE scripts/bench-freshness.sh …`): how long a group took from the arrival of
# its last source commit to its visibility on the target, by group size.
#
#   scripts/latency-summary.sh LOG
#
# Prints the median and 90th percentile of each leg over all target commits, then per bucket of
# 10 transactions the median frame-to-visible time and that time per transaction.
set -euo pipefail
[ $# -eq 1 ] || { echo "usage: $0 LOG" >&2; exit 2; }

sed 's/\x1b\[[0-9;]*m//g' "$1" | grep 'group visible' | awk '
  function field(name,   i, kv) {
    for (i = 1; i <= NF; i++) { split($i, kv, "="); if (kv[1] == name) return kv[2] + 0 }
    return -1
  }
  function sort(a, n,   i, j, t) {
    for (i = 2; i <= n; i++) { t = a[i]; for (j = i - 1; j >= 1 && a[j] > t; j--) a[j + 1] = a[j]; a[j + 1] = t }
  }
  function pct(a, n, p,   r) { r = int(n * p + 0.999); if (r < 1) r = 1; return a[r] }
  {
    n++
    src[n] = field("source_to_frame_us"); f2v[n] = field("frame_to_visible_us")
    first[n] = field("first_waited_us"); txns = field("transactions")
    b = int(txns / 10) * 10; if (b > 150) b = 150
    count[b]++; bucket[b, count[b]] = f2v[n]; per[b, count[b]] = f2v[n] / (txns > 0 ? txns : 1)
  }
  END {
    if (n == 0) { print "no \"group visible\" lines: was lsnpipe::latency=debug on?"; exit 1 }
    sort(src, n); sort(f2v, n); sort(first, n)
    printf "%d target commits\n", n
    printf "source commit to its frame   p50 %8d us  p90 %8d us\n", pct(src, n, .5), pct(src, n, .9)
    printf "last frame to visible        p50 %8d us  p90 %8d us\n", pct(f2v, n, .5), pct(f2v, n, .9)
    printf "first frame to visible       p50 %8d us  p90 %8d us\n", pct(first, n, .5), pct(first, n, .9)
    print "by group size (transactions): groups, last frame to visible p50, per transaction p50"
    for (b = 0; b <= 150; b += 10) {
      if (!count[b]) continue
      m = count[b]
      for (i = 1; i <= m; i++) { v[i] = bucket[b, i]; w[i] = per[b, i] }
      sort(v, m); sort(w, m)
      printf "  %3d%s %6d groups  %8d us  %6d us/txn\n", b, (b == 150 ? "+  " : "-" sprintf("%-3d", b + 9)), m, pct(v, m, .5), pct(w, m, .5)
    }
  }'
