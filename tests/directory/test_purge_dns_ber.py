"""Retention planning, DNS records for agency subdomains, and the BER encoder."""

from __future__ import annotations

import stat
from datetime import UTC, datetime
from pathlib import Path, PurePosixPath
from typing import Any

import pytest
from ldap3.protocol.rfc4511 import LDAPMessage
from pyasn1.codec.ber import decoder

from qnprov import dns
from qnprov.directory import ber, purge
from qnprov.directory.models import DirectoryAccount, DirectoryState
from qnprov.directory.passwords import CredentialsWriter, generate_password, hash_passwords

NOW = datetime(2026, 11, 29, 12, 0, tzinfo=UTC)


def account(eid: str, mail: str, status: str, disabled_at: str | None) -> DirectoryAccount:
    return DirectoryAccount(dn=f"uid={eid},ou=people,ou=SNV,ou=agencies,dc=q", employee_id=eid, agency="SNV",
                            cn="x", sn="x", given_name="x", title="", mail=mail, status=status,
                            disabled_at=disabled_at)


def test_purge_plan_takes_only_disabled_accounts_past_retention() -> None:
    state = DirectoryState(base_dn="dc=q", accounts={a.employee_id: a for a in [
        account("E1", "old@quangninh.test", "disabled", "20260101000000Z"),
        account("E2", "recent@quangninh.test", "disabled", "20261120000000Z"),
        account("E3", "active@quangninh.test", "active", None),
        account("E4", "nodate@quangninh.test", "disabled", None),
        account("E5", "../etc@quangninh.test", "disabled", "20250101000000Z"),
    ]})
    result = purge.plan_purge(state, 180, NOW)
    assert [(i.employee_id, i.mailbox) for i in result.items] == [
        ("E1", PurePosixPath("/var/vmail/quangninh.test/old"))]
    assert len(result.skipped) == 2
    assert [i.employee_id for i in purge.plan_purge(state, 0, NOW).items] == ["E1", "E2"]


def test_command_remover_runs_rm_through_the_prefix(tmp_path: Path) -> None:
    log = tmp_path / "argv"
    recorder = tmp_path / "record.sh"
    recorder.write_text(f'#!/bin/sh\nprintf "%s\\n" "$@" > {log}\n')
    recorder.chmod(0o755)
    purge.CommandRemover([str(recorder), "mail1"]).remove(PurePosixPath("/var/vmail/quangninh.test/old"))
    assert log.read_text().split("\n")[:-1] == ["mail1", "rm", "-rf", "--one-file-system", "--",
                                                "/var/vmail/quangninh.test/old"]
    printing = purge.PrintingRemover()
    printing.remove(PurePosixPath("/var/vmail/quangninh.test/old"))
    assert printing.commands == ["rm -rf --one-file-system -- /var/vmail/quangninh.test/old"]


def test_dns_records_for_an_agency_subdomain() -> None:
    records = dns.agency_domain_records("stttt.quangninh.test", mx_host="mail1.quangninh.test",
                                        report_address="dmarc@quangninh.test", primary_domain="quangninh.test")
    by_type = {(r.type, r.name): r.value for r in records}
    assert by_type[("MX", "stttt.quangninh.test.")] == "10 mail1.quangninh.test."
    assert by_type[("TXT", "stttt.quangninh.test.")] == "v=spf1 mx -all"
    assert by_type[("CNAME", "mail._domainkey.stttt.quangninh.test.")] == "mail._domainkey.quangninh.test."
    assert by_type[("TXT", "_dmarc.stttt.quangninh.test.")] == (
        "v=DMARC1; p=quarantine; sp=quarantine; adkim=s; aspf=s; rua=mailto:dmarc@quangninh.test")
    assert len(records) == 4
    assert records[0].zone_line() == "stttt.quangninh.test. 3600 IN MX 10 mail1.quangninh.test."
    assert records[1].zone_line() == 'stttt.quangninh.test. 3600 IN TXT "v=spf1 mx -all"'


def test_agency_dkim_key_longer_than_255_octets_is_split_on_its_zone_line() -> None:
    key = "A" * 400  # a 2048-bit RSA key's p= is about 400 base64 characters
    records = dns.agency_domain_records("stttt.quangninh.test", mx_host="mail1.quangninh.test",
                                        report_address="dmarc@quangninh.test", primary_domain="quangninh.test",
                                        dkim_public_key=key)
    dkim = next(r for r in records if r.name == "mail._domainkey.stttt.quangninh.test.")
    assert dkim.type == "TXT" and dkim.value == f"v=DKIM1; k=rsa; p={key}"
    line = dkim.zone_line()
    assert line.startswith("mail._domainkey.stttt.quangninh.test. 3600 IN TXT ( ") and line.endswith(" )")
    strings = line.split("TXT ( ", 1)[1].removesuffix(" )").split('" "')
    assert [len(s.strip('"')) for s in strings] == [255, len(dkim.value) - 255]
    assert "".join(s.strip('"') for s in strings) == dkim.value


def _pyasn1(encoded: bytes) -> Any:
    message, rest = decoder.decode(encoded, asn1Spec=LDAPMessage())
    assert rest == b""
    return message


def test_add_request_decodes_with_ldap3s_own_asn1_spec() -> None:
    long_value = "Đ" * 200  # forces long-form lengths
    message = _pyasn1(ber.add_request(7, "uid=E1,ou=people,dc=q", {"cn": ("Nguyễn Văn An",),
                                                                   "description": (long_value,)}))
    assert int(message["messageID"]) == 7
    add = message["protocolOp"]["addRequest"]
    assert str(add["entry"]) == "uid=E1,ou=people,dc=q"
    attrs = {str(a["type"]): [bytes(v).decode() for v in a["vals"]] for a in add["attributes"]}
    assert attrs == {"cn": ["Nguyễn Văn An"], "description": [long_value]}


def test_modify_and_moddn_and_delete_decode() -> None:
    modify = _pyasn1(ber.modify_request(8, "cn=x,dc=q", [(ber.MOD_REPLACE, "title", ()),
                                                          (ber.MOD_ADD, "member", ("uid=a,dc=q",))]))
    changes = modify["protocolOp"]["modifyRequest"]["changes"]
    assert [int(c["operation"]) for c in changes] == [2, 0]
    moddn = _pyasn1(ber.modify_dn_request(9, "uid=a,ou=x,dc=q", "uid=a", "ou=y,dc=q"))["protocolOp"]["modDNRequest"]
    assert (str(moddn["newrdn"]), str(moddn["newSuperior"]), bool(moddn["deleteoldrdn"])) == (
        "uid=a", "ou=y,dc=q", True)
    delete = _pyasn1(ber.delete_request(10, "uid=a,dc=q"))
    assert str(delete["protocolOp"]["delRequest"]) == "uid=a,dc=q"


def test_message_size_waits_for_the_whole_message() -> None:
    encoded = ber.add_request(1, "dc=q", {"description": ("x" * 300,)})
    assert ber.message_size(encoded[:3]) == -1
    assert ber.message_size(encoded[:-1]) == -1
    assert ber.message_size(encoded + b"\x30") == len(encoded)


def test_passwords_are_random_and_hashed() -> None:
    passwords = {generate_password() for _ in range(200)}
    assert len(passwords) == 200 and all(len(p) == 21 for p in passwords)
    (ssha,) = hash_passwords(["secret"], "ssha")
    (argon,) = hash_passwords(["secret"], "argon2")
    assert ssha.startswith("{SSHA}") and "secret" not in ssha
    assert argon.startswith("{ARGON2}$argon2id$")


def test_credentials_files_are_0600_from_creation(tmp_path: Path) -> None:
    writer = CredentialsWriter(tmp_path / "creds")
    writer.add("SNV", "E1", "annv@quangninh.test", "pw1")
    writer.close()
    path = tmp_path / "creds" / "SNV.csv"
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert stat.S_IMODE((tmp_path / "creds").stat().st_mode) == 0o700
    assert path.read_text().splitlines() == ["employee_id,address,initial_password", "E1,annv@quangninh.test,pw1"]


@pytest.mark.parametrize("mail", ["../x@q.test", "a@../../etc", "a/b@q.test", ".hidden@q.test"])
def test_mailbox_paths_never_leave_vmail(mail: str) -> None:
    with pytest.raises(ValueError):
        purge.mailbox_path(mail)
