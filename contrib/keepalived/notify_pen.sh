#!/bin/sh
# notify_pen.sh STATEFILE TYPE NAME STATE PRIORITY
#
# keepalived's notify script for pen.  keepalived appends TYPE ("INSTANCE"
# or "GROUP"), NAME, STATE (MASTER, BACKUP, FAULT, STOP) and PRIORITY to the
# words of the `notify` line, so the config names only STATEFILE.
# It writes the current state to STATEFILE (one line: STATE NAME TIME),
# appends the same line to STATEFILE.log, and tells syslog when `logger` is
# there.  pen itself needs no action: it listens on all addresses (or on
# the VIP with net.ipv4.ip_nonlocal_bind=1) and serves whatever arrives.

[ $# -ge 4 ] || { echo "usage: $0 STATEFILE TYPE NAME STATE [PRIORITY]" >&2; exit 1; }
statefile=$1
name=$3
state=$4
line="$state $name $(date +%s.%N)"

printf '%s\n' "$line" > "$statefile.tmp" && mv -f "$statefile.tmp" "$statefile"
printf '%s\n' "$line" >> "$statefile.log"
if command -v logger >/dev/null 2>&1; then
    logger -t pen-vrrp "VRRP instance $name is now $state (priority ${5:-?})"
fi
exit 0
