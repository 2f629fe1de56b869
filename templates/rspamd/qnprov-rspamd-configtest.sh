#!/bin/sh
# qnprov-rspamd-configtest RELPATH CANDIDATE [-s]
#
# Validate a candidate rspamd file against the WHOLE configuration before it
# replaces the live one. rspamadm configtest always reads a full tree, so a
# template's validate: step cannot point it at a single file. Instead:
#   1. copy the live /etc/rspamd into a private temporary directory,
#   2. drop the candidate in at RELPATH (e.g. local.d/dkim_signing.conf),
#   3. run configtest on the copy, with CONFDIR and LOCAL_CONFDIR pointing at
#      it, so every .include resolves inside the staged tree.
# The live tree is never touched; a failing candidate never goes live.
# Installed by the qnprov rspamd role; used as a template validate: step.
set -eu

live=/etc/rspamd
relpath=${1:?usage: $0 RELPATH CANDIDATE [-s]}
candidate=${2:?usage: $0 RELPATH CANDIDATE [-s]}
strict=${3:-}

case "$relpath" in
  /* | *..*) echo "refusing relative path outside the tree: $relpath" >&2; exit 2 ;;
esac

stage=$(mktemp -d /tmp/qnprov-rspamd-stage.XXXXXX)
trap 'rm -rf "$stage"' EXIT INT TERM
cp -a "$live/." "$stage/"
mkdir -p "$(dirname "$stage/$relpath")"
cp "$candidate" "$stage/$relpath"

# shellcheck disable=SC2086  # $strict is empty or exactly "-s"
exec rspamadm --var="CONFDIR=$stage" --var="LOCAL_CONFDIR=$stage" \
  configtest $strict -c "$stage/rspamd.conf"
