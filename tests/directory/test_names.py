"""Address generation from Vietnamese names."""

from __future__ import annotations

import unicodedata

import pytest

from qnprov.directory.names import (
    AddressBook,
    check_pattern,
    fold_to_ascii,
    local_part_for,
    name_problem,
    split_name,
)


@pytest.mark.parametrize(("name", "local"), [
    ("Nguyễn Văn An", "annv"),
    ("Trần Thị Bình", "binhtt"),
    ("Đặng Thị Ánh Tuyết", "tuyetdta"),
    ("Ðỗ Đức Đạt", "datdd"),          # U+00D0 typed for Đ
    ("Lê Hoàng", "hoangl"),
    ("Phạm   Minh   Đông", "dongpm"),  # runs of spaces
    ("Vũ", "vu"),                      # a single word
    ("Nguyễn Thị Ngọc Ánh Dương", "duongntna"),
])
def test_default_pattern(name: str, local: str) -> None:
    assert local_part_for(name) == local


def test_nfd_input_gives_the_same_address_as_nfc() -> None:
    for name in ("Nguyễn Văn An", "Đặng Thị Ánh Tuyết", "Ðỗ Đức Đạt", "Hồ Hữu Thắng"):
        nfd = unicodedata.normalize("NFD", name)
        assert nfd != name or name.isascii()
        assert local_part_for(nfd) == local_part_for(name)


def test_all_d_variants_fold_to_d() -> None:
    assert fold_to_ascii("đĐÐ") == "ddd"
    assert fold_to_ascii(unicodedata.normalize("NFD", "Đạt")) == "dat"


@pytest.mark.parametrize(("pattern", "local"), [
    ("{family}{middle}{given}", "nguyenvanan"),
    ("{given}.{family}", "an.nguyen"),
    ("{family_initial}{middle_initials}{given}", "nvan"),
])
def test_configurable_patterns(pattern: str, local: str) -> None:
    assert local_part_for("Nguyễn Văn An", pattern) == local


def test_unknown_pattern_field_is_refused() -> None:
    with pytest.raises(ValueError, match="address pattern"):
        check_pattern("{surname}")


def test_collisions_get_numeric_suffixes_in_call_order() -> None:
    book = AddressBook({"annv@quangninh.test"})
    assert book.allocate("annv", "quangninh.test") == "annv2@quangninh.test"
    assert book.allocate("annv", "quangninh.test") == "annv3@quangninh.test"
    assert book.allocate("annv", "other.test") == "annv@other.test"


def test_reserved_role_addresses_are_never_given_to_people() -> None:
    book = AddressBook()
    assert book.allocate("postmaster", "quangninh.test") == "postmaster2@quangninh.test"


def test_split_name_gives_sn_and_given_names() -> None:
    parts = split_name("Nguyễn Văn An")
    assert (parts.surname, parts.given_names) == ("Nguyễn", "Văn An")
    assert split_name("An").surname == "An"


@pytest.mark.parametrize(("name", "fragment"), [
    ("", "empty"),
    ("   ", "empty"),
    ("Nguyễn Văn 2", "'2'"),
    ("Nguyễn_Văn", "'_'"),
    ("Trần <script>", "'<'"),
    ("李小龍", "no Latin letters"),
])
def test_names_that_are_not_names(name: str, fragment: str) -> None:
    problem = name_problem(name)
    assert problem is not None and fragment in problem


@pytest.mark.parametrize("name", ["Nguyễn Văn An", "Lê-Hoàng O'Neil", "Trần T. Bình", "Nguyễn Văn An’"])
def test_real_names_pass(name: str) -> None:
    assert name_problem(name) is None
