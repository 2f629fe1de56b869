"""Deterministic synthetic agencies and rosters, for tests and the benchmark."""

from __future__ import annotations

import csv
import random
from pathlib import Path

from qnprov.directory.models import Account, Agency

FAMILY = ("Nguyễn", "Trần", "Lê", "Phạm", "Hoàng", "Huỳnh", "Phan", "Vũ", "Võ", "Đặng", "Bùi", "Đỗ",
          "Hồ", "Ngô", "Dương", "Lý", "Đinh", "Đào", "Trịnh", "Mai")
MIDDLE = ("Văn", "Thị", "Hữu", "Đức", "Minh", "Ngọc", "Thanh", "Quang", "Xuân", "Thu", "Hoài", "Kim",
          "Bảo", "Gia", "Anh")
GIVEN = ("An", "Bình", "Cường", "Dũng", "Giang", "Hà", "Hải", "Hạnh", "Hiếu", "Hoa", "Hùng", "Hương",
         "Khánh", "Lan", "Linh", "Long", "Mai", "Nam", "Nga", "Phong", "Phương", "Quân", "Sơn", "Tâm",
         "Thảo", "Thắng", "Trang", "Tuấn", "Tuyết", "Việt", "Yến", "Đạt", "Đông", "Ánh", "Ngọc")
TITLES = ("Chuyên viên", "Chuyên viên chính", "Phó Trưởng phòng", "Trưởng phòng", "Văn thư", "Kế toán")


def agencies(count: int) -> list[Agency]:
    result = [Agency(code="UBND", name="Ủy ban nhân dân tỉnh Quảng Ninh")]
    for number in range(1, count):
        result.append(Agency(code=f"AG{number:03d}", name=f"Cơ quan số {number}", parent="UBND"))
    return result


def roster(agency_list: list[Agency], people: int, seed: int = 3) -> list[Account]:
    rng = random.Random(seed)  # noqa: S311 - reproducible test data, not secrets
    result = []
    for number in range(people):
        name = f"{rng.choice(FAMILY)} {rng.choice(MIDDLE)} {rng.choice(GIVEN)}"
        result.append(Account(employee_id=f"E{number:06d}", agency=agency_list[number % len(agency_list)].code,
                              full_name=name, title=rng.choice(TITLES)))
    return result


def write_agencies_csv(path: Path, agency_list: list[Agency]) -> None:
    with path.open("w", encoding="utf-8", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(("code", "name", "parent"))
        for agency in agency_list:
            writer.writerow((agency.code, agency.name, agency.parent or ""))


def write_roster_csv(path: Path, accounts: list[Account]) -> None:
    with path.open("w", encoding="utf-8", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(("employee_id", "agency", "full_name", "title", "status"))
        for account in accounts:
            writer.writerow((account.employee_id, account.agency, account.full_name, account.title,
                             account.status))
