#!/bin/sh
# qnprov-fail2ban-configtest RELPATH CANDIDATE
#
# Validate a candidate fail2ban file against the WHOLE configuration before
# it replaces the live one: copy /etc/fail2ban to a private temporary
# directory, drop the candidate in at RELPATH (e.g. jail.local) and
# run "fail2ban-client -c <copy> -t", which parses every jail, filter and
# action. The live tree is never touched.
# Installed by the qnprov os_hardening role; used as a template validate: step.
set -eu

live=/etc/fail2ban
relpath=${1:?usage: $0 RELPATH CANDIDATE}
candidate=${2:?usage: $0 RELPATH CANDIDATE}

case "$relpath" in
  /* | *..*) echo "refusing relative path outside the tree: $relpath" >&2; exit 2 ;;
esac

stage=$(mktemp -d /tmp/qnprov-fail2ban-stage.XXXXXX)
trap 'rm -rf "$stage"' EXIT INT TERM
cp -a "$live/." "$stage/"
mkdir -p "$(dirname "$stage/$relpath")"
cp "$candidate" "$stage/$relpath"

fail2ban-client -c "$stage" -t
