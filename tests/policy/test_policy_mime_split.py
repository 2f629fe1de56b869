"""The engine's byte-level MIME splitter agrees with the standard library and keeps exact bytes."""

from __future__ import annotations

import email
import email.policy
from email.message import Message

import pytest
from policy_corpus import docx, message, pdf, to_cp1258, xlsx

from qnprov.policy.mime import decode_body, split_entity, split_multipart


def stdlib_leaves(raw: bytes) -> list[bytes]:
    parsed = email.message_from_bytes(raw, policy=email.policy.compat32)
    leaves = []
    for part in parsed.walk():
        if not part.is_multipart():
            payload = part.get_payload(decode=True)
            leaves.append(payload if isinstance(payload, bytes) else b"")
    return leaves


def our_leaves(raw: bytes) -> list[bytes]:
    leaves: list[bytes] = []

    def walk(data: bytes) -> None:
        entity = split_entity(data)
        boundary = entity.headers.get_boundary()
        if entity.headers.get_content_maintype() == "multipart" and boundary:
            for child in split_multipart(entity.body, boundary) or []:
                walk(child)
            return
        leaves.append(decode_body(entity.headers, entity.body))

    walk(raw)
    return leaves


CORPUS = {
    "plain-base64": message(body="Kính gửi các đơn vị", body_cte="base64"),
    "plain-qp": message(body="Độ mật: Thường\n" * 20, body_cte="quoted-printable"),
    "cp1258-8bit": message(raw_body_bytes=to_cp1258("Tiếng Việt có dấu"), charset="windows-1258", body_cte="8bit"),
    "alternative": message(html="<p>Xin chào</p>"),
    "attachments": message(attachments=[("a.docx", "application/octet-stream", docx()),
                                        ("b.xlsx", "application/octet-stream", xlsx([["1"]])),
                                        ("c.pdf", "application/pdf", pdf(["abc"]))]),
    "crlf": message(attachments=[("a.docx", "application/octet-stream", docx())]).replace(b"\n", b"\r\n"),
}


@pytest.mark.parametrize("name", sorted(CORPUS))
def test_leaves_match_the_standard_library(name: str) -> None:
    raw = CORPUS[name]
    ours = our_leaves(raw)
    theirs = stdlib_leaves(raw)
    # Text leaves may differ in the final line break the stdlib strips; binary ones must match.
    assert [leaf.rstrip(b"\r\n") for leaf in ours] == [leaf.rstrip(b"\r\n") for leaf in theirs]


def test_boundary_lookalikes_inside_content_and_longer_boundaries() -> None:
    body = (b"preamble\r\n--b\r\nContent-Type: text/plain\r\n\r\nline with --b inside\r\n--bb not ours\r\n"
            b"--b  \r\nContent-Type: text/plain\r\n\r\nsecond\r\n--b--\r\nepilogue --b\r\n")
    parts = split_multipart(body, "b")
    assert parts == [b"Content-Type: text/plain\r\n\r\nline with --b inside\r\n--bb not ours",
                     b"Content-Type: text/plain\r\n\r\nsecond"]


def test_missing_close_delimiter_keeps_the_last_part() -> None:
    assert split_multipart(b"--x\nA: b\n\nlast part\n", "x") == [b"A: b\n\nlast part\n"]


def test_no_delimiter_at_all_is_reported_as_none() -> None:
    assert split_multipart(b"no parts here", "x") is None


def test_entity_keeps_exact_bytes_and_header_only_input() -> None:
    raw = b"Subject: x\r\nX-A: 1\r\n\r\nbody\r\n"
    entity = split_entity(raw)
    assert entity.raw is raw
    assert entity.body == b"body\r\n"
    assert isinstance(entity.headers, Message) and entity.headers["X-A"] == "1"
    headers_only = split_entity(b"Subject: only headers\r\n")
    assert headers_only.headers["Subject"] == "only headers" and headers_only.body == b""
    no_headers = split_entity(b"\r\nbody")
    assert no_headers.body == b"body"


def test_bad_base64_is_decoded_leniently() -> None:
    entity = split_entity(b"Content-Transfer-Encoding: base64\r\n\r\nTeG6rFQ=\r\n!!!\r\nQQ")
    assert decode_body(entity.headers, entity.body).startswith("MẬ".encode()[:2])
