#!/bin/bash
# Sample the resident memory of every running `dtd train` process every 5 s (BENCHMARKS.md "Memory over a run").
# Output lines: unix-time pid rss-MB run-name. Usage: experiments/watch_rss.sh > rss.log & (kill it when done)
while true; do
  for pid in $(pgrep -f "bin/dtd train"); do
    rss=$(awk '/VmRSS/{print $2}' "/proc/$pid/status" 2>/dev/null)
    name=$(tr '\0' ' ' < "/proc/$pid/cmdline" 2>/dev/null | grep -o -- "--run_name [^ ]*\|--resume [^ ]*" | awk '{print $2}')
    [ -n "$rss" ] && echo "$(date +%s) $pid $((rss / 1024)) $name"
  done
  sleep 5
done
