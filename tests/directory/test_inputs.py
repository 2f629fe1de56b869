"""Roster and agency input: reading CSV/.xlsx and reporting every bad row."""

from __future__ import annotations

from pathlib import Path

import openpyxl
import pytest

from qnprov.directory import inputs
from qnprov.errors import InputError
from qnprov.policy.domains import is_freemail

KNOWN = {"STTTT", "SNV"}


def write(path: Path, text: str) -> Path:
    path.write_text(text, encoding="utf-8")
    return path


def validate(path: Path) -> tuple[list, list[dict]]:
    accounts, errors = inputs.validate_roster(inputs.read_roster_rows(path), KNOWN, is_freemail)
    return accounts, [e.as_dict() for e in errors]


def test_valid_roster(tmp_path: Path) -> None:
    roster = write(tmp_path / "roster.csv", "employee_id,agency,full_name,title,status\n"
                   "E1,STTTT,Nguyễn Văn An,Chuyên viên,\n"
                   "E2,SNV,  Trần  Thị Bình ,Trưởng phòng,left\n")
    accounts, errors = validate(roster)
    assert errors == []
    assert [(a.employee_id, a.full_name, a.status, a.line) for a in accounts] == [
        ("E1", "Nguyễn Văn An", "active", 2), ("E2", "Trần Thị Bình", "left", 3)]


def test_every_bad_row_is_reported_with_line_and_reason(tmp_path: Path) -> None:
    roster = write(tmp_path / "roster.csv", "employee_id,agency,full_name,title,status\n"
                   "E1,STTTT,Nguyễn Văn An,,\n"
                   ",STTTT,Trần Thị Bình,,\n"          # 3 missing id
                   "E1,SNV,Lê Văn Cường,,\n"          # 4 duplicate
                   "E4,NOPE,Hồ Thị Lan,,\n"           # 5 unknown agency
                   "E5,SNV,,,\n"                      # 6 empty name
                   "E6,SNV,Phạm Văn 7,,\n"            # 7 digit in name
                   "E7,SNV,Vũ Thị Hoa,,retired\n"     # 8 unknown status
                   "\"E8\",\"SNV\",\"Đỗ\nĐức\",,\n"   # 9-10 quoted newline: the line where the row starts
                   "E9,SNV,Ngô Văn Nam,,bogus\n")     # 11
    accounts, errors = validate(roster)
    assert [a.employee_id for a in accounts] == ["E1"]
    assert errors == [
        {"line": 3, "field": "employee_id", "reason": "missing"},
        {"line": 4, "field": "employee_id", "reason": "duplicate of line 2"},
        {"line": 5, "field": "agency", "reason": "unknown agency 'NOPE'"},
        {"line": 6, "field": "full_name", "reason": "empty name"},
        {"line": 7, "field": "full_name",
         "reason": "character '7' (U+0037) is not a letter, space, hyphen, apostrophe or dot"},
        {"line": 8, "field": "status", "reason": "unknown status 'retired' (active, left or empty)"},
        {"line": 9, "field": "full_name",
         "reason": "character '\\n' (U+000A) is not a letter, space, hyphen, apostrophe or dot"},
        {"line": 11, "field": "status", "reason": "unknown status 'bogus' (active, left or empty)"},
    ]


def test_employee_ids_compare_without_case_like_ldap_does(tmp_path: Path) -> None:
    roster = write(tmp_path / "roster.csv", "employee_id,agency,full_name,title,status\n"
                   "ab1,SNV,Lê Văn Cường,,\nAB1,SNV,Lê Văn Cường,,\n")
    _, errors = validate(roster)
    assert errors == [{"line": 3, "field": "employee_id", "reason": "duplicate of line 2"}]


def test_forward_to_free_webmail_is_refused(tmp_path: Path) -> None:
    roster = write(tmp_path / "roster.csv", "employee_id,agency,full_name,title,status,forward\n"
                   "E1,SNV,Lê Văn Cường,,,cuong@gmail.com\n"
                   "E2,SNV,Lê Văn Dũng,,,dung@mail.yahoo.com.vn\n"
                   "E3,SNV,Lê Văn Hùng,,,hung@quangninh.gov.vn\n")
    accounts, errors = validate(roster)
    assert [a.forwards for a in accounts] == [("hung@quangninh.gov.vn",)]
    assert [(e["line"], e["field"]) for e in errors] == [(2, "forward"), (3, "forward")]
    assert "1.3(2)" in errors[0]["reason"]


def test_missing_column_is_one_clear_error(tmp_path: Path) -> None:
    roster = write(tmp_path / "roster.csv", "employee_id,agency,name\nE1,SNV,x\n")
    with pytest.raises(InputError, match="full_name") as caught:
        inputs.read_roster_rows(roster)
    assert caught.value.errors[0]["line"] == 1


def test_non_utf8_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "roster.csv"
    path.write_bytes("employee_id,agency,full_name,title,status\nE1,SNV,Nguyên,,\n".encode("cp1258"))
    with pytest.raises(InputError, match="not UTF-8"):
        inputs.read_roster_rows(path)


def test_xlsx_roster_reads_like_csv(tmp_path: Path) -> None:
    book = openpyxl.Workbook()
    sheet = book.active
    assert sheet is not None
    sheet.append(["employee_id", "agency", "full_name", "title", "status"])
    sheet.append([1001, "STTTT", "Nguyễn Văn An", "Chuyên viên", None])
    sheet.append([None, None, None, None, None])
    sheet.append(["E2", "NOPE", "Trần Thị Bình", None, "left"])
    path = tmp_path / "roster.xlsx"
    book.save(path)
    accounts, errors = validate(path)
    assert [(a.employee_id, a.line) for a in accounts] == [("1001", 2)]
    assert errors == [{"line": 4, "field": "agency", "reason": "unknown agency 'NOPE'"}]


def test_agencies_file(tmp_path: Path) -> None:
    path = write(tmp_path / "agencies.csv", "code,name,parent\nUBND,Ủy ban nhân dân tỉnh,\n"
                 "STTTT,Sở TT&TT,UBND\nSTTTT,again,\nX Y,bad code,\nSNV,Sở Nội vụ,GHOST\n")
    agencies, errors = inputs.read_agencies(path)
    assert [a.code for a in agencies] == ["UBND", "STTTT", "SNV"]
    assert [e.as_dict() for e in errors] == [
        {"line": 4, "field": "code", "reason": "duplicate of line 3"},
        {"line": 5, "field": "code", "reason": "use 1-64 letters, digits, '-' or '_'"},
        {"line": 6, "field": "parent", "reason": "unknown agency 'GHOST'"},
    ]


def test_upstream_entries_become_roster_rows() -> None:
    field_map = inputs.parse_field_map("employee_id=employeeNumber,agency=departmentNumber,full_name=cn")
    rows = inputs.rows_from_source_entries(
        [{"employeenumber": ["77"], "departmentnumber": ["SNV"], "cn": ["Lê Văn Cường"]}], field_map)
    accounts, errors = inputs.validate_roster(rows, KNOWN, is_freemail)
    assert errors == [] and accounts[0].employee_id == "77"
    with pytest.raises(InputError, match="must map agency"):
        inputs.parse_field_map("employee_id=uid,full_name=cn")
