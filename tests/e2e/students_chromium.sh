#!/bin/sh
# Debian's Chromium at the lowest CPU priority: the load tests' browsers stand for students' browsers, which run
# on the students' own machines, not on the server's cores. SCHED_IDLE (chrt --idle) gives them only what the
# server leaves idle; nice alone is not enough, as Chromium run as root sets its renderers back to nice 0.
if command -v chrt >/dev/null 2>&1; then
  exec chrt --idle 0 nice -n 19 /usr/bin/chromium "$@"
fi
exec nice -n 19 /usr/bin/chromium "$@"
