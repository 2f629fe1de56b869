#!/usr/bin/env python3
"""Manual check: a real Dovecot 2.3 store pair rendered from templates/dovecot, end to end.

Not part of ``make test`` (it needs an image with Debian 12's Dovecot packages and
runs two Dovecot instances): the multi-host lab (lab-ha) is where the roles are proven;
this proves the store templates and ``qnprov store`` on real services when no lab is up.

What it does, all on loopback:
- a real slapd (qnprov_testing.slapd: the project's schema and ACLs) with two accounts,
  u1 on store1 and u2 on store2 (qnMailHost);
- in one podman container on the host network, two Dovecot instances rendered from the
  templates as store1 (127.0.0.2) and store2 (127.0.0.3): LMTP, replicator, aggregator,
  doveadm over TLS, the proxy passdb. The only additions are base_dir, state_dir,
  instance_name and log_path (two instances in one network namespace);
- delivers one message per account by LMTP to its own store, and checks that dsync
  replicated each to the other store (doveadm mailbox status);
- logs in over IMAP at store1 as u2 (proxied over STARTTLS to store2) and as u1 (local);
- runs ``qnprov store failover``/``failback`` against the real replicators (the probe's
  Ansible ad-hoc command, local connection, doveadm run in the container): failover moves
  u1, a second run moves nothing, u1's IMAP login at store1 is proxied to store2; with
  store1 stopped failback is refused and nothing changes; once store1 is back and has
  resynced, failback moves the accounts home.

Build the image once (about a minute, needs the Debian mirror):
    podman run -d --name qnprov-dovecot-build localhost/qnprov-debian:bookworm sleep infinity  # or --entrypoint
    podman exec qnprov-dovecot-build sh -c 'printf "#!/bin/sh\\nexit 101\\n" > /usr/sbin/policy-rc.d &&
        chmod +x /usr/sbin/policy-rc.d && apt-get update && apt-get install -y dovecot-core dovecot-imapd
        dovecot-lmtpd dovecot-ldap dovecot-sieve dovecot-managesieved && groupadd -g 5000 vmail &&
        useradd -u 5000 -g 5000 -M -d /var/vmail vmail'
    podman commit qnprov-dovecot-build localhost/qnprov-dovecot:check && podman rm -f qnprov-dovecot-build
Run from the project root with the venv active:  python scripts/store-pair-check.py
Exit 0 when every check passed; the container is removed either way.
"""

from __future__ import annotations

import datetime as dt
import imaplib
import os
import shutil
import smtplib
import ssl
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT), str(ROOT / "tests" / "unit")]

import test_store_templates as templates  # noqa: E402
import yaml  # noqa: E402
from cryptography import x509  # noqa: E402
from cryptography.hazmat.primitives import hashes, serialization  # noqa: E402
from cryptography.hazmat.primitives.asymmetric import ec  # noqa: E402
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID  # noqa: E402

from qnprov.stores.probe import parse_replicator_status  # noqa: E402
from qnprov_testing.slapd import running_test_slapd, ssha_hash  # noqa: E402

IMAGE = os.environ.get("QNPROV_DOVECOT_IMAGE", "localhost/qnprov-dovecot:check")
CONTAINER = "qnprov-store-pair-check"
S1, S2 = "store1.quangninh.test", "store2.quangninh.test"
IP = {S1: "127.0.0.2", S2: "127.0.0.3"}
TAG = {S1: "a", S2: "b"}
failures: list[str] = []


def check(ok: bool, what: str) -> None:
    print(("ok   " if ok else "FAIL ") + what, flush=True)
    if not ok:
        failures.append(what)


def pki(directory: Path) -> None:
    now = dt.datetime.now(dt.UTC)
    ca_key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "qnprov stores check CA")])
    ca = (x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(ca_key.public_key())
          .serial_number(x509.random_serial_number()).not_valid_before(now - dt.timedelta(minutes=5))
          .not_valid_after(now + dt.timedelta(days=1))
          .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True).sign(ca_key, hashes.SHA256()))
    (directory / "stores-ca.pem").write_bytes(ca.public_bytes(serialization.Encoding.PEM))
    for host, tag in TAG.items():
        key = ec.generate_private_key(ec.SECP256R1())
        cert = (x509.CertificateBuilder().subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, host)]))
                .issuer_name(name).public_key(key.public_key()).serial_number(x509.random_serial_number())
                .not_valid_before(now - dt.timedelta(minutes=5)).not_valid_after(now + dt.timedelta(days=1))
                .add_extension(x509.SubjectAlternativeName([x509.DNSName(host)]), critical=False)
                .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH,
                                                      ExtendedKeyUsageOID.CLIENT_AUTH]), critical=False)
                .sign(ca_key, hashes.SHA256()))
        (directory / f"{tag}.pem").write_bytes(cert.public_bytes(serialization.Encoding.PEM))
        (directory / f"{tag}.key").write_bytes(key.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()))


def sh(command: str, check_rc: bool = True) -> subprocess.CompletedProcess[str]:
    result = subprocess.run(["podman", "exec", CONTAINER, "sh", "-c", command], capture_output=True, text=True,
                            check=False, timeout=120)
    if check_rc and result.returncode != 0:
        raise SystemExit(f"{command}: {result.stdout}{result.stderr}")
    return result


def doveadm(tag: str, args: str) -> subprocess.CompletedProcess[str]:
    return sh(f"doveadm -c /etc/dovecot-{tag}/dovecot.conf {args}", check_rc=False)


def imap_login(user: str, tls: ssl.SSLContext) -> tuple[str, list[bytes]]:
    imap = imaplib.IMAP4(IP[S1], 143)
    imap.starttls(ssl_context=tls)
    try:
        imap.login(f"{user}@quangninh.test", f"pw-{user}")
    except imaplib.IMAP4.error as exc:
        return f"login failed: {exc}", []
    imap.select("INBOX")
    _, ids = imap.search(None, "ALL")
    imap.logout()
    return "OK", ids


def main() -> int:
    work = Path(tempfile.mkdtemp(prefix="qnprov-store-pair-"))
    work.chmod(0o755)
    pki(work)
    subprocess.run(["podman", "rm", "-f", CONTAINER], capture_output=True, check=False)
    subprocess.run(["podman", "run", "-d", "--name", CONTAINER, "--network", "host", "-v", f"{work}:/exp",
                    "--entrypoint", "/bin/sleep", IMAGE, "infinity"], check=True, capture_output=True)
    try:
        with running_test_slapd(work) as slapd:
            base = slapd.base_dn
            slapd.ldap_tool("ldapadd", input_text=(
                f"dn: ou=LAB,ou=agencies,{base}\nobjectClass: organizationalUnit\nou: LAB\n\n"
                f"dn: ou=people,ou=LAB,ou=agencies,{base}\nobjectClass: organizationalUnit\nou: people\n"))
            for uid, host in (("u1", S1), ("u2", S2)):
                slapd.ldap_tool("ldapadd", input_text=(
                    f"dn: uid={uid},ou=people,ou=LAB,ou=agencies,{base}\nobjectClass: inetOrgPerson\n"
                    f"objectClass: qnMailAccount\nuid: {uid}\ncn: {uid}\nsn: {uid}\nmail: {uid}@quangninh.test\n"
                    f"qnAccountStatus: active\nqnEnabledService: imap\nqnMailHost: {host}\n"
                    f"userPassword: {ssha_hash('pw-' + uid)}\n"))
            shutil.copy(slapd.ca_cert, work / "ldap-ca.pem")  # type: ignore[arg-type]
            for host, tag in TAG.items():
                files = templates.render_dovecot(
                    dovecot_mail_stores=templates.STORES, dovecot_store_name=host, group_names=["mail_all", "store"],
                    dovecot_listen=[IP[host]], dovecot_auth_proxy_self=[IP[host]],
                    dovecot_config_dir=f"/etc/dovecot-{tag}", dovecot_ldap_uri=f"ldap://ldap.qnprov.test:{slapd.port}",
                    dovecot_ldap_tls_ca_file="/exp/ldap-ca.pem", dovecot_ldap_base_dn=base,
                    dovecot_ldap_bind_dn=slapd.service_dn("dovecot"),
                    dovecot_ldap_bind_password=slapd.service_passwords["dovecot"],
                    dovecot_tls_cert_file=f"/exp/{tag}.pem", dovecot_tls_key_file=f"/exp/{tag}.key",
                    dovecot_store_tls_ca_file="/exp/stores-ca.pem", dovecot_vmail_dir=f"/var/vmail-{tag}",
                    dovecot_postmaster_address="postmaster@quangninh.test")
                conf = work / f"conf-{tag}"
                conf.mkdir()
                for name, text in files.items():
                    if name == "dovecot.conf":  # two instances in one network namespace
                        text += (f"base_dir = /run/dovecot-{tag}\ninstance_name = dovecot-{tag}\n"
                                 f"log_path = /exp/{tag}.log\nstate_dir = /var/lib/dovecot-{tag}\n")
                    (conf / name).write_text(text)
                (conf / "qnprov-doveadm.conf.ext").write_text("doveadm_password = Abcdefghijklmnop1234\n")
            sh("printf '127.0.0.2 store1.quangninh.test\\n127.0.0.3 store2.quangninh.test\\n"
               "127.0.0.1 ldap.qnprov.test\\n' >> /etc/hosts")
            for tag in TAG.values():
                sh(f"cp -r /exp/conf-{tag} /etc/dovecot-{tag} && chmod 600 /etc/dovecot-{tag}/*.ext && "
                   f"mkdir -p /var/vmail-{tag} /var/lib/dovecot-{tag} && chown vmail:vmail /var/vmail-{tag}")
                conf_check = sh(f"doveconf -n -c /etc/dovecot-{tag}/dovecot.conf >/dev/null", check_rc=False)
                check(conf_check.returncode == 0 and conf_check.stderr == "", f"doveconf -n accepts store {tag}")
                sh(f"dovecot -c /etc/dovecot-{tag}/dovecot.conf")
            time.sleep(3)

            for host, user in ((S1, "u1"), (S2, "u2")):
                with smtplib.LMTP(IP[host], 24, timeout=20) as lmtp:
                    lmtp.sendmail("sender@example.org", [f"{user}@quangninh.test"],
                                  f"From: sender@example.org\r\nTo: {user}@quangninh.test\r\nSubject: to {user}\r\n"
                                  f"Message-ID: <{user}-1@check>\r\n\r\nhello\r\n")
            replicated = False
            for _ in range(20):
                on_b = doveadm("b", "-f flow mailbox status -u u1@quangninh.test messages INBOX").stdout
                on_a = doveadm("a", "-f flow mailbox status -u u2@quangninh.test messages INBOX").stdout
                if "messages=1" in on_b and "messages=1" in on_a:
                    replicated = True
                    break
                time.sleep(2)
            check(replicated, "dsync over tcps copied u1's mail to store2 and u2's to store1")
            states = parse_replicator_status(doveadm("a", "-f tab replicator status '*'").stdout)
            check(all(s.last_success_seconds is not None and not s.last_failed for s in states.values())
                  and sorted(states) == ["u1@quangninh.test", "u2@quangninh.test"],
                  f"store1's replicator reports a successful sync for both accounts: {states}")

            tls = ssl.create_default_context(cafile=str(work / "stores-ca.pem"))
            tls.check_hostname = False  # the client reaches 127.0.0.2; the proxy checks store2's name
            check(imap_login("u2", tls) == ("OK", [b"1"]), "IMAP at store1 as u2 is proxied to store2 (STARTTLS)")
            check(imap_login("u1", tls) == ("OK", [b"1"]), "IMAP at store1 as u1 is served locally")
            # Postfix submission's SASL asks store1's auth as service smtp (the auth-client protocol).
            sasl = doveadm("a", "auth test -x service=smtp u2@quangninh.test pw-u2")
            check(sasl.returncode == 0 and "auth succeeded" in sasl.stdout,
                  f"SASL (service smtp) at store1 for u2, an account of store2: {' '.join(sasl.stdout.split())[:160]}")
            wrong = doveadm("a", "auth test -x service=smtp u2@quangninh.test wrong")
            check(wrong.returncode != 0 and "auth failed" in wrong.stdout, "a wrong password fails SASL at store1")
            log_a = (work / "a.log").read_text()
            check("Started proxying to <127.0.0.3> (<store2.quangninh.test>)" in log_a, "store1 logged the proxying")
            errors = [line for tag in TAG.values() for line in (work / f"{tag}.log").read_text().splitlines()
                      if "Error" in line and "setrlimit" not in line]
            check(errors == [], f"no errors in the Dovecot logs so far: {errors[:3]}")

            inventory = work / "inv"
            inventory.mkdir()
            (inventory / "hosts.yml").write_text(yaml.safe_dump({"all": {
                "vars": {"qnprov_ldap_base_dn": base, "qnprov_agency_stores": {"LAB": S1},
                         "qnprov_stores": [{"name": S1, "replica": S2}, {"name": S2, "replica": S1}]},
                "hosts": {h: {"ansible_connection": "local", "ansible_python_interpreter": sys.executable,
                              "dovecot_store_name": h} for h in (S1, S2)}}}))
            bindir = work / "bin"
            bindir.mkdir()
            (bindir / "doveadm").write_text(f'#!/bin/sh\nexec podman exec {CONTAINER} doveadm '
                                            '-c "/etc/dovecot-$DOVEADM_CONF/dovecot.conf" "$@"\n')
            (bindir / "doveadm").chmod(0o755)
            password = work / "writer.pw"
            password.write_text(slapd.writer_password)
            password.chmod(0o600)
            connection = ["--ldap-url", slapd.url, "--bind-dn", slapd.writer_dn, "--bind-password-file",
                          str(password), "--base-dn", base]

            def store(conf: str, *args: str) -> subprocess.CompletedProcess[str]:
                env = {**os.environ, "PATH": f"{bindir}:{os.environ['PATH']}", "DOVEADM_CONF": conf,
                       "QNPROV_STATE_DIR": str(work / "state")}
                return subprocess.run([str(Path(sys.executable).parent / "qnprov"), "store", *args, "-i",
                                       str(inventory), *connection], capture_output=True, text=True, env=env,
                                      check=False, timeout=300)

            def homes() -> dict[str, str]:
                text = slapd.ldap_tool("ldapsearch", "-LLL", "-b", base, "(objectClass=qnMailAccount)", "mail",
                                       "qnMailHost").stdout
                found = {}
                for block in text.strip().split("\n\n"):
                    fields = dict(line.split(": ", 1) for line in block.splitlines() if ": " in line)
                    found[fields["mail"]] = fields["qnMailHost"]
                return found

            moved = store("b", "failover", S1, "--json")
            check(moved.returncode == 0 and '"moved": 1' in moved.stdout, f"failover store1: {moved.stdout[:200]}")
            check(homes() == {"u1@quangninh.test": S2, "u2@quangninh.test": S2}, "u1 now on store2 in the directory")
            check(imap_login("u1", tls) == ("OK", [b"1"]), "IMAP at store1 as u1 now proxied to store2, mail there")
            again = store("b", "failover", S1, "--json")
            check(again.returncode == 0 and '"to_move": 0' in again.stdout, "a second failover moves nothing")
            sh("kill $(cat /run/dovecot-a/master.pid)")
            time.sleep(2)
            refused = store("a", "failback", S1)
            check(refused.returncode == 2 and "the store is down or its replicator does not answer" in refused.stderr,
                  f"failback to a stopped store1 is refused: {refused.stderr.strip()[:200]}")
            check(homes() == {"u1@quangninh.test": S2, "u2@quangninh.test": S2}, "the refusal wrote nothing")
            sh("dovecot -c /etc/dovecot-a/dovecot.conf")
            time.sleep(5)
            doveadm("a", "replicator replicate -f '*'")
            time.sleep(6)
            back = store("a", "failback", S1, "--json")
            check(back.returncode == 0 and '"moved": 2' in back.stdout, f"failback once resynced: {back.stdout[:200]}")
            check(homes() == {"u1@quangninh.test": S1, "u2@quangninh.test": S1},
                  "LAB's accounts are home on store1 (qnprov_agency_stores)")
    finally:
        subprocess.run(["podman", "rm", "-f", CONTAINER], capture_output=True, check=False)
        shutil.rmtree(work, ignore_errors=True)
    print(f"{'FAILED: ' + str(len(failures)) if failures else 'all checks passed'}")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
