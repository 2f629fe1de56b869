#!/bin/sh
# qnprov-nginx-configtest NAME CANDIDATE
#
# Check a candidate server file of /etc/nginx/qnprov.d against the WHOLE nginx
# configuration before it goes live: copy nginx.conf and qnprov.d to a private
# temporary directory, point nginx.conf's include at the copy, put the
# candidate in as NAME and run "nginx -t" on that. The live tree is untouched.
# Installed by the qnprov webmail role; used as a template validate: step.
set -eu

name=${1:?usage: $0 NAME CANDIDATE}
candidate=${2:?usage: $0 NAME CANDIDATE}
case "$name" in
  */* | .*) echo "refusing a name with a path: $name" >&2; exit 2 ;;
esac

stage=$(mktemp -d /tmp/qnprov-nginx-stage.XXXXXX)
trap 'rm -rf "$stage"' EXIT INT TERM
mkdir "$stage/qnprov.d"
cp -a /etc/nginx/qnprov.d/. "$stage/qnprov.d/" 2>/dev/null || true
cp "$candidate" "$stage/qnprov.d/$name"
sed "s#include /etc/nginx/qnprov.d/\*\.conf;#include $stage/qnprov.d/*.conf;#" /etc/nginx/nginx.conf > "$stage/nginx.conf"
grep -qF "include $stage/qnprov.d/*.conf;" "$stage/nginx.conf" || {
  echo "/etc/nginx/nginx.conf does not include /etc/nginx/qnprov.d/*.conf (roles/mta_sts)" >&2; exit 1; }
/usr/sbin/nginx -t -q -c "$stage/nginx.conf"
