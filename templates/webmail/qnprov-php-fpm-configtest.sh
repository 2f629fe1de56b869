#!/bin/sh
# qnprov-php-fpm-configtest CANDIDATE
#
# Check a candidate PHP-FPM pool file on its own with "php-fpm -t", inside a
# minimal main configuration, before it replaces the live pool.
# Installed by the qnprov webmail role; used as a template validate: step.
set -eu

candidate=${1:?usage: $0 CANDIDATE}
stage=$(mktemp -d /tmp/qnprov-php-fpm-stage.XXXXXX)
trap 'rm -rf "$stage"' EXIT INT TERM
printf '[global]\npid = %s/php-fpm.pid\nerror_log = %s/error.log\ninclude = %s\n' \
  "$stage" "$stage" "$candidate" > "$stage/php-fpm.conf"
/usr/sbin/php-fpm{{ __webmail_php_version }} -t -y "$stage/php-fpm.conf"
