"""Just enough BER for the LDAP operations the provisioner pipelines (RFC 4511).

ldap3 builds every request as a pyasn1 object tree; that costs about a millisecond per
entry, six times what slapd needs to store it, so a 20,000-account import spent most of
its time in the encoder. The few message shapes the provisioner sends in bulk (add,
modify, modify DN, delete, paged search) are encoded here directly, and their
responses decoded without building objects. Connection set-up, TLS and bind stay with
ldap3.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from functools import lru_cache

# Universal and RFC 4511 application tags.
_INTEGER, _OCTETS, _ENUM, _BOOLEAN, _SEQUENCE, _SET = 0x02, 0x04, 0x0A, 0x01, 0x30, 0x31
TAG_SEARCH_REQUEST, TAG_SEARCH_ENTRY, TAG_SEARCH_DONE, TAG_SEARCH_REFERENCE = 0x63, 0x64, 0x65, 0x73
TAG_MODIFY_REQUEST, TAG_MODIFY_RESPONSE = 0x66, 0x67
TAG_ADD_REQUEST, TAG_ADD_RESPONSE = 0x68, 0x69
TAG_DELETE_REQUEST, TAG_DELETE_RESPONSE = 0x4A, 0x6B
TAG_MODDN_REQUEST, TAG_MODDN_RESPONSE = 0x6C, 0x6D
TAG_EXTENDED_RESPONSE = 0x78
_CONTROLS = 0xA0
_NEW_SUPERIOR = 0x80

PAGED_RESULTS_OID = "1.2.840.113556.1.4.319"

MOD_ADD, MOD_DELETE, MOD_REPLACE = 0, 1, 2

Value = str | bytes


def _length(n: int) -> bytes:
    if n < 0x80:
        return bytes((n,))
    body = n.to_bytes((n.bit_length() + 7) // 8, "big")
    return bytes((0x80 | len(body),)) + body


def tlv(tag: int, content: bytes) -> bytes:
    n = len(content)
    if n < 0x80:  # the common case, without the general length encoder
        return bytes((tag, n)) + content
    return bytes((tag,)) + _length(n) + content


def _octets(value: Value) -> bytes:
    raw = value.encode("utf-8") if isinstance(value, str) else value
    n = len(raw)
    if n < 0x80:
        return bytes((_OCTETS, n)) + raw
    return bytes((_OCTETS,)) + _length(n) + raw


def _integer(value: int) -> bytes:
    return tlv(_INTEGER, value.to_bytes(max(1, (value.bit_length() + 8) // 8), "big", signed=True))


def _enum(value: int) -> bytes:
    return tlv(_ENUM, bytes((value,)))


def _encode_attribute(name: str, values: Sequence[Value]) -> bytes:
    return tlv(_SEQUENCE, _octets(name) + tlv(_SET, b"".join([_octets(v) for v in values])))


@lru_cache(maxsize=4096)
def _cached_attribute(name: str, values: tuple[Value, ...]) -> bytes:
    return _encode_attribute(name, values)


# Attributes whose values repeat across thousands of entries (object classes, status,
# services, quota, agency, title): encoded once and reused.
_REPEATING = frozenset({"objectClass", "qnAccountStatus", "qnEnabledService", "qnMailQuota",
                        "qnAgencyCode", "title"})


def _attribute(name: str, values: Sequence[Value]) -> bytes:
    if name in _REPEATING and isinstance(values, tuple):
        return _cached_attribute(name, values)
    return _encode_attribute(name, values)


def _message(message_id: int, operation: bytes, controls: bytes = b"") -> bytes:
    return tlv(_SEQUENCE, _integer(message_id) + operation + controls)


def add_request(message_id: int, dn: str, attributes: Mapping[str, Sequence[Value]]) -> bytes:
    body = _octets(dn) + tlv(_SEQUENCE, b"".join([_attribute(k, v) for k, v in attributes.items()]))
    return _message(message_id, tlv(TAG_ADD_REQUEST, body))


def modify_request(message_id: int, dn: str,
                   changes: Sequence[tuple[int, str, Sequence[Value]]]) -> bytes:
    """``changes`` is a list of (MOD_ADD|MOD_DELETE|MOD_REPLACE, attribute, values)."""
    encoded = b"".join(tlv(_SEQUENCE, _enum(op) + _attribute(attr, values)) for op, attr, values in changes)
    return _message(message_id, tlv(TAG_MODIFY_REQUEST, _octets(dn) + tlv(_SEQUENCE, encoded)))


def modify_dn_request(message_id: int, dn: str, new_rdn: str, new_superior: str) -> bytes:
    body = _octets(dn) + _octets(new_rdn) + tlv(_BOOLEAN, b"\xff")
    body += tlv(_NEW_SUPERIOR, new_superior.encode("utf-8"))
    return _message(message_id, tlv(TAG_MODDN_REQUEST, body))


def delete_request(message_id: int, dn: str) -> bytes:
    return _message(message_id, tlv(TAG_DELETE_REQUEST, dn.encode("utf-8")))


def search_request(message_id: int, base: str, encoded_filter: bytes, attributes: Sequence[str],
                   page_size: int, cookie: bytes) -> bytes:
    """A subtree search with the simple paged results control (RFC 2696)."""
    body = (_octets(base) + _enum(2) + _enum(0) + _integer(0) + _integer(0) + tlv(_BOOLEAN, b"\x00")
            + encoded_filter + tlv(_SEQUENCE, b"".join(_octets(a) for a in attributes)))
    paging = tlv(_SEQUENCE, _integer(page_size) + _octets(cookie))
    control = tlv(_SEQUENCE, _octets(PAGED_RESULTS_OID) + _octets(paging))
    return _message(message_id, tlv(TAG_SEARCH_REQUEST, body), tlv(_CONTROLS, control))


# --- decoding -------------------------------------------------------------------------


def _read_header(buf: bytes, pos: int) -> tuple[int, int, int]:
    """Return (tag, content start, content end) of the element at ``pos``."""
    tag = buf[pos]
    first = buf[pos + 1]
    if first < 0x80:
        return tag, pos + 2, pos + 2 + first
    count = first & 0x7F
    length = int.from_bytes(buf[pos + 2:pos + 2 + count], "big")
    start = pos + 2 + count
    return tag, start, start + length


def message_size(buf: bytes | bytearray, pos: int = 0) -> int:
    """Bytes the message starting at ``pos`` occupies, or -1 if ``buf`` does not hold all of it."""
    available = len(buf) - pos
    if available < 2:
        return -1
    first = buf[pos + 1]
    if first < 0x80:
        total = 2 + first
    else:
        count = first & 0x7F
        if available < 2 + count:
            return -1
        total = 2 + count + int.from_bytes(buf[pos + 2:pos + 2 + count], "big")
    return total if available >= total else -1


def _integer_value(buf: bytes, start: int, end: int) -> int:
    return int.from_bytes(buf[start:end], "big", signed=True)


@dataclass(slots=True)
class LdapResult:
    message_id: int
    tag: int
    code: int
    matched_dn: str
    message: str
    paged_cookie: bytes = b""


@dataclass(slots=True)
class SearchEntry:
    message_id: int
    dn: str
    attributes: dict[str, list[str]]


_NAME_CACHE: dict[bytes, str] = {}


def _text(raw: bytes) -> str:
    """UTF-8 text; a binary value (a JPEG photo, say) survives as surrogate escapes."""
    try:
        return raw.decode()
    except UnicodeDecodeError:
        return raw.decode("utf-8", "surrogateescape")


def decode_message(buf: bytes) -> LdapResult | SearchEntry | None:
    """Decode one complete LDAPMessage; None for a search reference (ignored).

    Attribute names of search entries are returned lower-cased.
    """
    read = _read_header
    _, pos, end = read(buf, 0)
    _, istart, iend = read(buf, pos)
    message_id = _integer_value(buf, istart, iend)
    op_tag, op_start, op_end = read(buf, iend)
    if op_tag == TAG_SEARCH_ENTRY:
        _, dn_start, dn_end = read(buf, op_start)
        dn = buf[dn_start:dn_end].decode("utf-8")
        attributes: dict[str, list[str]] = {}
        _, pos, attrs_end = read(buf, dn_end)
        names = _NAME_CACHE
        while pos < attrs_end:  # short-form lengths inline: this loop runs ~250k times per read
            length = buf[pos + 1]
            if length < 0x80:
                astart, aend = pos + 2, pos + 2 + length
            else:
                _, astart, aend = read(buf, pos)
            tend = astart + 2 + buf[astart + 1]
            raw_name = buf[astart + 2:tend]
            name = names.get(raw_name)
            if name is None:
                name = names.setdefault(raw_name, raw_name.decode("ascii").lower())
            length = buf[tend + 1]
            if length < 0x80:
                vpos, vend = tend + 2, tend + 2 + length
            else:
                _, vpos, vend = read(buf, tend)
            values = []
            while vpos < vend:
                length = buf[vpos + 1]
                if length < 0x80:
                    vstart, vpos = vpos + 2, vpos + 2 + length
                    values.append(_text(buf[vstart:vpos]))
                else:
                    _, vstart, vstop = read(buf, vpos)
                    values.append(_text(buf[vstart:vstop]))
                    vpos = vstop
            attributes[name] = values
            pos = aend
        return SearchEntry(message_id, dn, attributes)
    if op_tag == TAG_SEARCH_REFERENCE:
        return None
    _, cstart, cend = read(buf, op_start)
    code = _integer_value(buf, cstart, cend)
    _, mstart, mend = read(buf, cend)
    _, dstart, dend = read(buf, mend)
    cookie = b""
    if op_end < end and buf[op_end] == _CONTROLS:
        cookie = _paged_cookie(buf, op_end)
    return LdapResult(message_id, op_tag, code, buf[mstart:mend].decode("utf-8", "replace"),
                      buf[dstart:dend].decode("utf-8", "replace"), cookie)


def _paged_cookie(buf: bytes, pos: int) -> bytes:
    _, cpos, cend = _read_header(buf, pos)
    while cpos < cend:
        _, start, stop = _read_header(buf, cpos)
        _, ostart, oend = _read_header(buf, start)
        if buf[ostart:oend].decode("ascii") == PAGED_RESULTS_OID:
            inner = oend
            while inner < stop:
                tag, vstart, vend = _read_header(buf, inner)
                if tag == _OCTETS:  # controlValue: SEQUENCE { size INTEGER, cookie OCTET STRING }
                    _, sstart, _ = _read_header(buf, vstart)
                    _, _, size_end = _read_header(buf, sstart)
                    _, kstart, kend = _read_header(buf, size_end)
                    return bytes(buf[kstart:kend])
                inner = vend
        cpos = stop
    return b""
