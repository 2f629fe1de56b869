"""`qnprov restore mailbox`'s checks on the controller, before any host is asked, and that they agree
with the host script's own (templates/backup/qnprov-backup.py.j2 checks again on the host)."""

from __future__ import annotations

import pytest

from qnprov.backup import reports
from qnprov.backup.restore import check_address, check_folder, host_arguments
from qnprov.errors import InputError
from qnprov_testing.backup_script import render

GOOD_ADDRESSES = ["an@quangninh.test", "nguyen.van.an+work@so-tc.quangninh.gov.vn", "a_1%x@q.test"]
BAD_ADDRESSES = ["", "an", "-u@q.test", ".an@q.test", "../etc/passwd@q.test", "an@q.test/../b", "a..b@q.test",
                 "a*@q.test", "a b@q.test", "an@-q.test", "an@q.test\n", "an@q[1].test", "a@b@q.test"]
BAD_FOLDERS = ["", "-o", "--into", "Restored/*", "a%", "a\\b", "a//b", "/a", "a/", "a\nb", "a\x7fb", "x" * 201]


@pytest.mark.parametrize("address", GOOD_ADDRESSES)
def test_a_plain_address_passes_as_one_token(address: str) -> None:
    assert check_address(address) == address
    assert host_arguments(address, folder=None, into=None, check=False) == [f"--address={address}"]


@pytest.mark.parametrize("address", BAD_ADDRESSES)
def test_an_address_that_could_be_a_path_step_option_or_pattern_is_refused(address: str) -> None:
    with pytest.raises(InputError) as caught:
        check_address(address)
    assert str(caught.value) == (f"{address!r} is not a mail address qnprov restores (letters, digits and ._%+- "
                                 "before the @, starting with a letter or digit)")


@pytest.mark.parametrize("name", BAD_FOLDERS)
def test_a_folder_that_could_be_an_option_or_wildcard_is_refused(name: str) -> None:
    with pytest.raises(InputError) as caught:
        check_folder(name, "--into")
    assert str(caught.value).startswith(f"--into {name!r} is not a folder name (no leading -")


def test_the_host_arguments_are_single_tokens() -> None:
    assert host_arguments("an@q.test", folder="Projects/2026 Q4", into="Restored/before", check=True) == [
        "--address=an@q.test", "--folder=Projects/2026 Q4", "--into=Restored/before", "--check"]
    assert "restore-mailbox" in reports.ACTIONS


def test_the_host_script_applies_the_same_rules() -> None:
    namespace: dict[str, object] = {}
    exec(compile(render("qnprov-backup.py.j2"), "qnprov-backup", "exec"), namespace)  # noqa: S102 - our own script
    host_address, host_folder = namespace["check_address"], namespace["check_folder"]
    error = namespace["BackupError"]
    assert isinstance(error, type)
    for address in GOOD_ADDRESSES:
        assert host_address(address) == address  # type: ignore[operator]
    for address in BAD_ADDRESSES:
        with pytest.raises(error):
            host_address(address)  # type: ignore[operator]
    for name in BAD_FOLDERS:
        with pytest.raises(error):
            host_folder(name, "--folder")  # type: ignore[operator]
    assert host_folder("Projects/2026 Q4", "--folder") == "Projects/2026 Q4"  # type: ignore[operator]
