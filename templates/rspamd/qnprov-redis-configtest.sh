#!/bin/sh
# qnprov-redis-configtest MAIN [INCLUDE]
#
# Redis has no "check the config" flag: it parses its configuration at start
# and exits with "FATAL CONFIG FILE ERROR" when a directive is wrong. So start
# a throwaway server on MAIN (the candidate or live redis.conf) plus the
# optional INCLUDE (a candidate drop-in), with
# every side effect switched off (no TCP port, only a socket in a private
# scratch directory, no persistence, an empty data directory, foreground). If it is still running after a
# moment, the configuration parsed; a parse error exits at once, non-zero.
# Installed by the qnprov rspamd role; used as a template validate: step.
set -eu

main=${1:?usage: $0 MAIN [INCLUDE]}
include=${2:-}
scratch=$(mktemp -d /tmp/qnprov-redis-check.XXXXXX)
trap 'rm -rf "$scratch"' EXIT INT TERM
chmod 0700 "$scratch"

# Later directives win in redis.conf, so the overrides come last.
cat > "$scratch/check.conf" <<CONF
include $main
${include:+include $include}
port 0
unixsocket $scratch/check.sock
daemonize no
supervised no
pidfile ""
logfile ""
save ""
appendonly no
dir $scratch
CONF

rc=0
timeout 2 redis-server "$scratch/check.conf" > "$scratch/out" 2>&1 || rc=$?
if [ "$rc" -eq 124 ]; then
  exit 0  # still running after 2 s: the configuration was accepted
fi
cat "$scratch/out" >&2
exit 1
