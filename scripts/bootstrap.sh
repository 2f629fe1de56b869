#!/usr/bin/env bash
# Install everything qnprov needs on a fresh Debian 12 machine (run as root):
# system packages, then a virtualenv with qnprov and its dev tools.
# Idempotent: packages already present are skipped, the venv is reused.
set -euo pipefail
cd "$(dirname "$0")/.."

SYSTEM_PACKAGES=(
  # the package and its venv
  python3 python3-venv python3-dev gcc make git
  # the testbed: podman with runc, and debootstrap for the base image
  podman runc debootstrap uidmap slirp4netns fuse-overlayfs
  # the lab is reached over SSH, as production is (ssh, ssh-keygen)
  openssh-client
  # pymilter builds against libmilter
  libmilter-dev
  # slapd's {ARGON2} module (roles/openldap/files/qnprov_argon2.c) is built here, on
  # the controller, for the directory servers and for the test slapd; gcc is above
  libargon2-dev libldap-dev
  # probes, scanners and the throwaway services the tests start on loopback
  swaks ldap-utils slapd postfix postfix-ldap postfix-pcre testssl.sh lynis openssl
  # the openldap role's LDAP modules, run locally against test slapds
  # (tests/directory/test_replication_role.py)
  python3-ldap
  # the backup tests back a real slapd up with restic and restore it (docs/backup.md)
  restic
  # swaks only recommends its TLS modules, and --no-install-recommends skips them:
  # without these, `swaks --tls` says "TLS not available: requires Net::SSLeay".
  libnet-ssleay-perl libio-socket-ssl-perl
  # the HTML report and the webmail are checked in a real browser; certutil gives the
  # browser a private NSS db that trusts the lab CA (qnprov_testing/webbrowser.py)
  chromium libnss3-tools
  # real third-party mail clients meet the labs (tests/labha: logins proxied to the home store)
  isync msmtp sieve-connect
  # the webmail's Outlook Autodiscover script runs under the real PHP in the unit tests
  # (tests/unit/test_autoconfig_templates.py: hostile requests through php-cgi)
  php-cgi php-xml
  # the webmail's qnprov_sievepolicy checker runs under the PHP CLI in the unit tests
  # (tests/unit/test_sievepolicy_templates.py); php-cgi pulls it in, named here all the same
  php-cli
  # the lab-ha drills give their 16 clients addresses on the lab bridge (qnprov/labclient.py)
  iproute2
)

missing=()
for pkg in "${SYSTEM_PACKAGES[@]}"; do
  dpkg-query -W -f='${db:Status-Abbrev}' "$pkg" 2>/dev/null | grep -q '^ii' || missing+=("$pkg")
done
if ((${#missing[@]})); then
  echo "bootstrap: installing ${missing[*]}"
  # The host's slapd and postfix are only binaries for tests; never configure
  # a default directory or mail system on the host itself.
  debconf-set-selections <<'PRESEED'
slapd slapd/no_configuration boolean true
postfix postfix/main_mailer_type select No configuration
PRESEED
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi

PY=${PYTHON:-python3}
if [ ! -x .venv/bin/python ]; then
  "$PY" -m venv .venv
fi
stamp=.venv/.qnprov-installed
if [ ! -f "$stamp" ] || [ pyproject.toml -nt "$stamp" ]; then
  .venv/bin/pip install -q -U pip wheel
  .venv/bin/pip install -q -e '.[dev]'
  touch "$stamp"
fi
echo "bootstrap: ready (.venv/bin/qnprov)"
