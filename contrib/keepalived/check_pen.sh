#!/bin/sh
# check_pen.sh CONTROL_ADDRESS [TIMEOUT [PENCTL]]
#
# keepalived's vrrp_script for pen: exit 0 when the pen whose control socket
# (pen -C) is CONTROL_ADDRESS (host:port or /path/to/socket) answers `mode`
# within TIMEOUT seconds (default 2); non-zero when it does not: pen is not
# running, the control socket refuses, or pen accepted the connection but
# does not answer (stopped, wedged) -- a process that merely exists is not
# enough.  PENCTL is the penctl program to run (default: penctl on PATH).
#
# Exit status: 0 healthy, 1 usage, 2 no answer or an error reply.

[ $# -ge 1 ] || { echo "usage: $0 CONTROL_ADDRESS [TIMEOUT [PENCTL]]" >&2; exit 1; }
control=$1
limit=${2:-2}
penctl=${3:-penctl}

reply=$(timeout -s KILL "$limit" "$penctl" "$control" mode 2>/dev/null) || exit 2
[ -n "$reply" ] || exit 2
exit 0
