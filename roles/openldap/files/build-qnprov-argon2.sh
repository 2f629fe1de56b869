#!/bin/sh
# Build slapd's {ARGON2} argon2id module: build-qnprov-argon2.sh SOURCE.c OUTPUT.so
# Run on the Ansible controller (Debian 12, like the directory servers; needs gcc,
# libargon2-dev and libldap-dev from scripts/bootstrap.sh) and by the test slapd
# (qnprov_testing/slapd.py), so tests load the very module the role installs.
# Servers get the built file and its checksum, never a compiler.
set -eu
src=$1
out=$2
tmp="$out.tmp.$$"
trap 'rm -f "$tmp"' EXIT
gcc -std=c11 -D_DEFAULT_SOURCE -O2 -g0 -Wall -Wextra -Werror -fPIC -shared \
  -fstack-protector-strong -D_FORTIFY_SOURCE=2 -Wl,-z,relro,-z,now \
  -o "$tmp" "$src" -largon2 -llber
chmod 0644 "$tmp"
mv -f "$tmp" "$out"
trap - EXIT
