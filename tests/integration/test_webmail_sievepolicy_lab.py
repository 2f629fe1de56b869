"""Clause 1.3(2) in the webmail's filters UI (issue 14, browser test step 4), in a real browser.

Playwright drives Debian's Chromium (qnprov_testing/webbrowser.py, the lab CA trusted,
nothing ignored) through Settings → Filters of the lab's Roundcube, as an official
would: a redirect to a free-mail domain is refused with the bilingual message citing
clause 1.3(2), and what Dovecot holds afterwards is read with ``doveadm sieve list``
and ``doveadm sieve get`` inside the lab host: the refused redirect is in no script.
A redirect to an internal address is saved, so the refusal is the policy, not a
broken form. The raw editor ("Edit filter set") is checked the same way.

Scripts uploaded over ManageSieve itself (sieve-connect) never pass through the
webmail; their redirects are refused at re-injection (tests/integration/
test_mailflow_reinject.py).
"""

from __future__ import annotations

import json
import re
import subprocess
import uuid
from collections.abc import Iterator
from typing import Any

import pytest
from labenv import require_env
from test_webmail_browser_lab import BASE, _accounts, _messages, lab_browser, login

from qnprov_testing.webbrowser import LabBrowser, goto

pytestmark = pytest.mark.lab

FILTERS = f"{BASE}?_task=settings&_action=plugin.managesieve"
CLAUSE_VI = "khoản 1.3(2)"
CLAUSE_EN = "clause 1.3(2)"
PLUGIN_DIR = "/var/lib/roundcube/plugins/qnprov_sievepolicy"
REINJECT_TABLE = "/etc/postfix/freemail_recipient.regexp"


def _doveadm(*argv: str, stdin: str | None = None) -> str:
    result = subprocess.run(["podman", "exec", "-i", require_env("QNPROV_TEST_HOST"), "doveadm", "-f", "json", *argv],
                            capture_output=True, text=True, input=stdin, check=False, timeout=120)
    assert result.returncode == 0, f"doveadm {' '.join(argv)}: {result.stderr[-800:]}"
    return result.stdout


def _listed(user: str) -> list[dict[str, str]]:
    return json.loads(_doveadm("sieve", "list", "-u", user) or "[]")


def sieve_scripts(user: str) -> dict[str, str]:
    """Every Sieve script Dovecot holds for ``user``, by name (``doveadm sieve list`` / ``get``)."""
    return {row["script"]: json.loads(_doveadm("sieve", "get", "-u", user, row["script"]))[0]["sieve script"]
            for row in _listed(user)}


def active_script(user: str) -> str | None:
    found = [row["script"] for row in _listed(user) if row["active"] == "ACTIVE"]
    return found[0] if found else None


@pytest.fixture(scope="module")
def browser() -> Iterator[LabBrowser]:
    with lab_browser() as running:
        yield running


@pytest.fixture
def official() -> Iterator[dict[str, str]]:
    """A lab account whose Sieve scripts are put back as they were after the test."""
    account = _accounts()[1]
    user = account["address"]
    before, active = sieve_scripts(user), active_script(user)
    yield account
    if active_script(user) is not None:
        _doveadm("sieve", "deactivate", "-u", user)
    for name in sieve_scripts(user):
        if name not in before:
            _doveadm("sieve", "delete", "-u", user, name)
    for name, text in before.items():
        _doveadm("sieve", "put", "-u", user, *(["-a"] if name == active else []), name, stdin=text)


def _host_file(path: str) -> str:
    result = subprocess.run(["podman", "exec", require_env("QNPROV_TEST_HOST"), "cat", path],
                            capture_output=True, text=True, check=False, timeout=60)
    assert result.returncode == 0, result.stderr
    return result.stdout


def test_the_webmail_refuses_the_domains_the_reinjection_listener_refuses() -> None:
    # One list on the host: the plugin's config and Postfix's re-injection table (roles/postfix).
    webmail = re.findall(r"^    '([^']+)',$", _host_file(f"{PLUGIN_DIR}/config.inc.php"), re.M)
    postfix = [re.sub(r"\\(.)", r"\1", found) for found in
               re.findall(r"^/@\(\.\+\\\.\)\?(\S+)\\\.\?\$/ 550 ", _host_file(REINJECT_TABLE), re.M)]
    assert len(webmail) >= 20 and "gmail.com" in webmail
    assert sorted(webmail) == sorted(postfix)


def _open_filters(page: Any) -> Any:
    goto(page, FILTERS)
    page.wait_for_function("() => window.rcmail && rcmail.env.action == 'plugin.managesieve' && !rcmail.busy")
    return page


def _new_filter(page: Any, name: str, action: str, target: str) -> Any:
    """Settings → Filters → Create: a filter for every message whose action is ``action`` to ``target``;
    returns the filter form's frame after Save was clicked."""
    _open_filters(page)
    page.locator("#layout-content a.create").click()
    frame = page.frame_locator("#filter-box")
    frame.locator("input[name=_name]").fill(name)
    frame.locator("select[name=_join]").select_option("any")
    frame.locator("select[name='_action_type[0]']").select_option(action)
    frame.locator("input[name='_action_target[0]']").fill(target)
    frame.locator("button.submit").click()
    return frame


def _shown(page: Any, kind: str) -> str:
    """The messages shown once one of ``kind`` is; a refusal is the only error shown (not also
    managesieve's generic "could not save, server error")."""
    page.locator(f"#messagestack > div.{kind}").first.wait_for(timeout=30_000)
    shown = " ".join(_messages(page))
    if kind == "error":
        assert page.locator("#messagestack > div.error").count() == 1, shown
    return shown


@pytest.mark.parametrize(("action", "target", "domain"), [
    ("redirect", "lanhdao.so@gmail.com", "gmail.com"),
    ("redirect_copy", "LanhDao.So@GMail.COM", "gmail.com"),
    ("redirect", "lanhdao@mail.yahoo.com.vn", "yahoo.com.vn"),
], ids=["redirect-gmail", "redirect-copy-mixed-case", "redirect-subdomain"])
def test_a_free_mail_redirect_is_refused_in_the_filters_ui(
        browser: LabBrowser, official: dict[str, str], action: str, target: str, domain: str) -> None:
    user = official["address"]
    name = f"Chuyển tiếp {uuid.uuid4().hex[:8]}"
    watched = browser.context()
    page = watched.page()
    login(page, user, official["password"])
    _new_filter(page, name, action, target)
    shown = _shown(page, "error")
    assert CLAUSE_VI in shown and CLAUSE_EN in shown, shown
    assert target in shown and f"({domain})" in shown, shown
    # Nothing reached Dovecot: no script holds the filter or the address.
    scripts = sieve_scripts(user)
    assert not any(name in text or target.lower() in text.lower() for text in scripts.values()), scripts
    assert not any("@" + domain in text.lower() for text in scripts.values()), scripts
    assert not watched.errors, "\n".join(watched.errors)
    watched.close()


def test_an_internal_redirect_is_saved(browser: LabBrowser, official: dict[str, str]) -> None:
    user = official["address"]
    colleague = _accounts()[0]["address"]
    name = f"Chuyển tiếp nội bộ {uuid.uuid4().hex[:8]}"
    watched = browser.context()
    page = watched.page()
    login(page, user, official["password"])
    _new_filter(page, name, "redirect_copy", colleague)
    shown = _shown(page, "confirmation")
    assert CLAUSE_EN not in shown, shown
    scripts = sieve_scripts(user)
    saved = [text for text in scripts.values() if f"# rule:[{name}]" in text]
    assert len(saved) == 1, scripts
    assert f'redirect :copy "{colleague}";' in saved[0], saved[0]
    assert not watched.errors, "\n".join(watched.errors)
    watched.close()


def _raw_editor(page: Any) -> Any:
    """Filters → Actions → Edit filter set: the raw editor's frame (CodeMirror over the textarea)."""
    _open_filters(page)
    page.locator("#layout-list a.actions").click()
    page.locator("#filtersetmenu-menu a.edit").click()
    frame = page.frame_locator("#filter-box")
    frame.locator(".CodeMirror").wait_for()
    return frame


def _type_at_the_end(page: Any, frame: Any, text: str) -> None:
    frame.locator(".CodeMirror-code").click()
    page.keyboard.press("Control+End")
    page.keyboard.press("Enter")
    page.keyboard.type(text)


def test_a_redirect_typed_in_the_raw_editor_is_refused(browser: LabBrowser, official: dict[str, str]) -> None:
    user = official["address"]
    colleague = _accounts()[0]["address"]
    set_name = "roundcube"
    original = f'require ["copy"];\n# rule:[Lưu bản sao]\nif true\n{{\n\tredirect :copy "{colleague}";\n}}\n'
    _doveadm("sieve", "put", "-u", user, "-a", set_name, stdin=original)
    watched = browser.context()
    page = watched.page()
    login(page, user, official["password"])

    frame = _raw_editor(page)
    _type_at_the_end(page, frame,
                     '# do not tell\nif header :contains "subject" "mật" { redirect "Ban.Tin@Outlook.COM"; }')
    frame.locator("button.submit").click()
    shown = _shown(page, "error")
    assert CLAUSE_VI in shown and CLAUSE_EN in shown and "(outlook.com)" in shown, shown
    # The editor marks the line of the refused redirect, and Dovecot still holds the set as it was.
    marked = frame.locator(".CodeMirror-code > div:has(.line-error)")
    assert marked.count() == 1 and 'redirect "Ban.Tin@Outlook.COM"' in marked.inner_text()
    assert sieve_scripts(user)[set_name].strip() == original.strip()

    # The same editor saves an internal redirect: the refusal is the policy, not a broken editor.
    frame = _raw_editor(page)
    _type_at_the_end(page, frame, f'redirect "{colleague}";')
    frame.locator("button.submit").click()
    assert CLAUSE_EN not in _shown(page, "confirmation")
    saved = sieve_scripts(user)[set_name]
    assert f'redirect "{colleague}";' in saved and "outlook" not in saved.lower(), saved
    assert not watched.errors, "\n".join(watched.errors)
    watched.close()


def test_a_free_mail_address_in_the_forwarding_settings_is_refused(
        browser: LabBrowser, official: dict[str, str]) -> None:
    # Settings → Forwarding, the form an official is most likely to try (a copy to Gmail).
    user = official["address"]
    target = "vanthu.so@Gmail.com"
    watched = browser.context()
    page = watched.page()
    login(page, user, official["password"])
    goto(page, f"{BASE}?_task=settings&_action=plugin.managesieve-forward")
    page.locator("#forward_status").select_option("on")
    page.locator("#forward_action").select_option("copy")
    page.locator("#action_target").fill(target)
    page.locator("#layout-content button.submit").click()
    shown = _shown(page, "error")
    assert CLAUSE_VI in shown and CLAUSE_EN in shown and "(gmail.com)" in shown, shown
    scripts = sieve_scripts(user)
    assert not any("gmail" in text.lower() for text in scripts.values()), scripts
    assert not watched.errors, "\n".join(watched.errors)
    watched.close()


def test_out_of_office_may_reply_but_not_pass_mail_on_to_free_mail(
        browser: LabBrowser, official: dict[str, str]) -> None:
    # An auto-reply is not forwarding (citizens writing from Gmail get it); the "and
    # redirect/copy the message to" part of the same form is.
    user = official["address"]
    subject = f"Nghỉ phép {uuid.uuid4().hex[:8]}"
    watched = browser.context()
    page = watched.page()
    login(page, user, official["password"])
    goto(page, f"{BASE}?_task=settings&_action=plugin.managesieve-vacation")
    page.locator("#vacation_subject").fill(subject)
    page.locator("#vacation_reason").fill("Tôi nghỉ phép đến thứ Hai. Việc gấp xin liên hệ văn thư.")
    page.locator("#vacation_status").select_option("on")
    page.locator("#vacation_action").select_option("copy")
    page.locator("#action_target").fill("thu.ky@mail.ru")
    page.locator("#layout-content button.submit").click()
    shown = _shown(page, "error")
    assert CLAUSE_VI in shown and CLAUSE_EN in shown and "(mail.ru)" in shown, shown
    assert not any(subject in text or "mail.ru" in text for text in sieve_scripts(user).values())

    goto(page, f"{BASE}?_task=settings&_action=plugin.managesieve-vacation")
    page.locator("#vacation_subject").fill(subject)
    page.locator("#vacation_reason").fill("Tôi nghỉ phép đến thứ Hai. Việc gấp xin liên hệ văn thư.")
    page.locator("#vacation_status").select_option("on")
    page.locator("#vacation_action").select_option("keep")
    page.locator("#layout-content button.submit").click()
    assert CLAUSE_EN not in _shown(page, "confirmation")
    saved = [text for text in sieve_scripts(user).values() if subject in text]
    assert len(saved) == 1 and "vacation" in saved[0] and "redirect" not in saved[0], saved
    assert not watched.errors, "\n".join(watched.errors)
    watched.close()
