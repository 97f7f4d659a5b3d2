#!/bin/sh
# Debian's Chromium at the lowest CPU priority: the load tests' browsers stand for students' browsers, which run
# on the students' own machines, not on the server's cores. Niced, they take only what the server leaves idle.
exec nice -n 19 /usr/bin/chromium "$@"
