"""Reading and validating agencies and rosters (CSV, .xlsx, or an upstream directory).

Reading turns a file into raw rows with line numbers; validation turns raw rows into
``Account``/``Agency`` models plus one ``RowError`` per problem. Nothing here touches
the target directory, so the whole input is judged before anything is written.
"""

from __future__ import annotations

import csv
import io
import re
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

from qnprov.directory.models import Account, Agency, RowError
from qnprov.directory.names import name_problem, normalize_name
from qnprov.errors import InputError

ROSTER_COLUMNS = ("employee_id", "agency", "full_name", "title", "status")
AGENCY_COLUMNS = ("code", "name", "parent")
OPTIONAL_ROSTER_COLUMNS = ("forward",)
STATUSES = {"": "active", "active": "active", "left": "left"}

# Limits for hostile or mistaken input.
MAX_INPUT_BYTES = 64 * 1024 * 1024
MAX_ROWS = 500_000
MAX_FIELD_CHARS = 256

AGENCY_CODE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_-]{0,63}$")
EMPLOYEE_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$")
DOMAIN = re.compile(r"^(?=.{1,253}$)([a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?\.)+[a-z]{2,63}$")
ADDRESS = re.compile(r"^[A-Za-z0-9.!#$%&'*+/=?^_`{|}~-]{1,64}@[A-Za-z0-9.-]{1,253}$")


@dataclass(frozen=True)
class RawRow:
    line: int
    fields: dict[str, str]


def _read_csv(path: Path) -> tuple[list[str], list[RawRow]]:
    data = path.read_bytes()
    if len(data) > MAX_INPUT_BYTES:
        raise InputError(f"{path}: larger than {MAX_INPUT_BYTES // 2**20} MiB")
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        raise InputError(f"{path}: not UTF-8 (byte {exc.start}); save the file as CSV UTF-8") from exc
    reader = csv.reader(io.StringIO(text, newline=""))
    header = [h.strip().lower() for h in next(reader, [])]
    rows: list[RawRow] = []
    start = reader.line_num + 1
    for values in reader:
        if len(rows) >= MAX_ROWS:
            raise InputError(f"{path}: more than {MAX_ROWS} rows")
        if any(v.strip() for v in values):
            rows.append(RawRow(start, dict(zip(header, values, strict=False))))
        start = reader.line_num + 1
    return header, rows


def _read_xlsx(path: Path) -> tuple[list[str], list[RawRow]]:
    import openpyxl

    if path.stat().st_size > MAX_INPUT_BYTES:
        raise InputError(f"{path}: larger than {MAX_INPUT_BYTES // 2**20} MiB")
    try:
        book = openpyxl.load_workbook(path, read_only=True, data_only=True)
    except Exception as exc:  # openpyxl raises many types for a broken workbook
        raise InputError(f"{path}: not a readable .xlsx workbook ({exc})") from exc
    try:
        sheet = book.worksheets[0]
        rows_iter = sheet.iter_rows(values_only=True)
        header = [str(h or "").strip().lower() for h in next(rows_iter, ())]
        rows: list[RawRow] = []
        for number, values in enumerate(rows_iter, start=2):
            if len(rows) >= MAX_ROWS:
                raise InputError(f"{path}: more than {MAX_ROWS} rows")
            cells = ["" if v is None else _cell_text(v) for v in values]
            if any(c.strip() for c in cells):
                rows.append(RawRow(number, dict(zip(header, cells, strict=False))))
    finally:
        book.close()
    return header, rows


def _cell_text(value: object) -> str:
    if isinstance(value, float) and value.is_integer():
        return str(int(value))  # an employee number typed as a number
    return str(value)


def read_table(path: Path, required: Sequence[str]) -> list[RawRow]:
    if not path.is_file():
        raise InputError(f"{path}: no such file")
    header, rows = _read_xlsx(path) if path.suffix.lower() == ".xlsx" else _read_csv(path)
    missing = [c for c in required if c not in header]
    if missing:
        raise InputError(f"{path}: header lacks column(s) {', '.join(missing)} (need {','.join(required)})",
                         [{"line": 1, "field": c, "reason": "missing column"} for c in missing])
    return rows


def _field(row: RawRow, name: str) -> str:
    return (row.fields.get(name) or "").strip()


def validate_agencies(rows: Iterable[RawRow],
                      existing: Iterable[str] = ()) -> tuple[list[Agency], list[RowError]]:
    """Agencies from the file; ``existing`` are codes already in the directory (valid parents)."""
    agencies: list[Agency] = []
    errors: list[RowError] = []
    seen: dict[str, int] = {}
    for row in rows:
        code, name, parent = _field(row, "code"), _field(row, "name"), _field(row, "parent")
        domain = _field(row, "domain").lower()
        bad = False
        if not AGENCY_CODE.match(code):
            errors.append(RowError(row.line, "code", "missing" if not code else
                                   "use 1-64 letters, digits, '-' or '_'"))
            bad = True
        elif code.upper() in seen:
            errors.append(RowError(row.line, "code", f"duplicate of line {seen[code.upper()]}"))
            bad = True
        if not name or len(name) > MAX_FIELD_CHARS:
            errors.append(RowError(row.line, "name", "missing" if not name else "too long"))
            bad = True
        if domain and not DOMAIN.match(domain):
            errors.append(RowError(row.line, "domain", f"not a domain name: {domain!r}"))
            bad = True
        if not bad:
            seen[code.upper()] = row.line
            agencies.append(Agency(code=code, name=name, parent=parent or None, domain=domain or None))
    known = {a.code for a in agencies} | set(existing)
    for agency in agencies:
        if agency.parent and agency.parent not in known:
            line = seen[agency.code.upper()]
            errors.append(RowError(line, "parent", f"unknown agency {agency.parent!r}"))
    return agencies, errors


FreemailCheck = Callable[[str], bool]


def validate_roster(rows: Iterable[RawRow], known_agencies: set[str] | None,
                    is_freemail: FreemailCheck) -> tuple[list[Account], list[RowError]]:
    """Every valid row as an ``Account``; every problem as a ``RowError`` (a row may have several).

    ``known_agencies=None`` defers the unknown-agency check to ``check_agencies`` (the
    directory may still be being read).
    """
    accounts: list[Account] = []
    errors: list[RowError] = []
    seen_ids: dict[str, int] = {}
    for row in rows:
        row_errors: list[RowError] = []
        eid = _field(row, "employee_id")
        if not eid:
            row_errors.append(RowError(row.line, "employee_id", "missing"))
        elif not EMPLOYEE_ID.match(eid):
            row_errors.append(RowError(row.line, "employee_id", "use 1-64 letters, digits, '.', '_' or '-'"))
        elif eid.lower() in seen_ids:  # uid matching in LDAP ignores case
            row_errors.append(RowError(row.line, "employee_id", f"duplicate of line {seen_ids[eid.lower()]}"))
        else:
            seen_ids[eid.lower()] = row.line
        agency = _field(row, "agency")
        if not agency:
            row_errors.append(RowError(row.line, "agency", "missing"))
        elif known_agencies is not None and agency not in known_agencies:
            row_errors.append(RowError(row.line, "agency", f"unknown agency {agency!r}"))
        full_name = _field(row, "full_name")
        problem = name_problem(full_name) if len(full_name) <= MAX_FIELD_CHARS else "name too long"
        if problem:
            row_errors.append(RowError(row.line, "full_name", problem))
        title = _field(row, "title")
        if len(title) > MAX_FIELD_CHARS:
            row_errors.append(RowError(row.line, "title", "too long"))
        status = _field(row, "status").lower()
        if status not in STATUSES:
            row_errors.append(RowError(row.line, "status", f"unknown status {status!r} (active, left or empty)"))
        forwards: tuple[str, ...] | None = None
        if "forward" in row.fields:
            forwards = tuple(f.strip() for f in re.split(r"[;,\s]+", _field(row, "forward")) if f.strip())
            for address in forwards:
                if not ADDRESS.match(address):
                    row_errors.append(RowError(row.line, "forward", f"not a mail address: {address!r}"))
                elif is_freemail(address.rpartition("@")[2]):
                    row_errors.append(RowError(
                        row.line, "forward",
                        f"{address}: forwarding official mail to free webmail is forbidden (clause 1.3(2))"))
        if row_errors:
            errors.extend(row_errors)
            continue
        accounts.append(Account(employee_id=eid, agency=agency, full_name=normalize_name(full_name),
                                title=title, status=STATUSES[status],  # type: ignore[arg-type]
                                forwards=forwards, line=row.line))
    return accounts, errors


ROSTER_FIELD_ORDER = {name: index for index, name in enumerate((*ROSTER_COLUMNS, *OPTIONAL_ROSTER_COLUMNS))}


def check_agencies(accounts: list[Account], errors: list[RowError],
                   known_agencies: set[str]) -> tuple[list[Account], list[RowError]]:
    """The deferred unknown-agency check; errors come back in line and column order."""
    kept = [a for a in accounts if a.agency in known_agencies]
    unknown = [RowError(a.line, "agency", f"unknown agency {a.agency!r}") for a in accounts
               if a.agency not in known_agencies]
    merged = sorted([*errors, *unknown], key=lambda e: (e.line, ROSTER_FIELD_ORDER.get(e.field, 99)))
    return kept, merged


def read_agencies(path: Path, existing: Iterable[str] = ()) -> tuple[list[Agency], list[RowError]]:
    return validate_agencies(read_table(path, AGENCY_COLUMNS), existing)


def read_roster_rows(path: Path) -> list[RawRow]:
    return read_table(path, ROSTER_COLUMNS)


def parse_field_map(spec: str) -> dict[str, str]:
    """``employee_id=employeeNumber,agency=departmentNumber,...`` -> {roster field: LDAP attribute}."""
    mapping: dict[str, str] = {}
    for item in filter(None, (part.strip() for part in spec.split(","))):
        field_name, sep, attribute = item.partition("=")
        field_name, attribute = field_name.strip(), attribute.strip()
        if not sep or field_name not in (*ROSTER_COLUMNS, *OPTIONAL_ROSTER_COLUMNS) or not attribute:
            raise InputError(f"--source-map: {item!r} is not FIELD=attribute with FIELD one of "
                             f"{', '.join((*ROSTER_COLUMNS, *OPTIONAL_ROSTER_COLUMNS))}")
        mapping[field_name] = attribute
    for needed in ("employee_id", "agency", "full_name"):
        if needed not in mapping:
            raise InputError(f"--source-map must map {needed}")
    return mapping


DEFAULT_SOURCE_MAP = "employee_id=employeeNumber,agency=departmentNumber,full_name=cn,title=title"


def rows_from_source_entries(entries: Iterable[dict[str, list[str]]],
                             field_map: dict[str, str]) -> list[RawRow]:
    """Upstream LDAP/AD entries as roster rows; the 'line' is the entry's position (1-based)."""
    rows = []
    lowered = {k: v.lower() for k, v in field_map.items()}
    for number, attributes in enumerate(entries, start=1):
        by_name = {k.lower(): v for k, v in attributes.items()}
        fields = {f: (by_name.get(a) or [""])[0] for f, a in lowered.items()}
        if "forward" in lowered:
            fields["forward"] = ";".join(by_name.get(lowered["forward"], []))
        rows.append(RawRow(number, fields))
    return rows
