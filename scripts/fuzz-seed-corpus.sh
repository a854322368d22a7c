#!/usr/bin/env bash
# Write the captured pgoutput fixtures (proto/pg15/*.hex) as the seed corpus of the decoder's
# fuzz target: fuzz/corpus/decode/<fixture>-<n>, each one flag byte (bit 0 = inside a stream)
# followed by one message. Then: cd fuzz && cargo fuzz run decode
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
out=$root/fuzz/corpus/decode
mkdir -p "$out"
for f in "$root"/proto/pg15/*.hex; do
  name=$(basename "$f" .hex)
  n=0
  in_stream=00
  while read -r line; do
    case $line in '#'*|'') continue ;; esac
    n=$((n + 1))
    case $line in 53*) flag=00; in_stream=01 ;; 45) flag=01; in_stream=00 ;; *) flag=$in_stream ;; esac
    # The streamed fixtures repeat one Insert shape hundreds of times; keep the first 20.
    [ "$n" -le 20 ] || [ "${line:0:2}" != 49 ] || continue
    printf '%s%s' "$flag" "$line" | xxd -r -p >"$out/$name-$n"
  done <"$f"
done
echo "$(ls "$out" | wc -l) seeds in $out"
