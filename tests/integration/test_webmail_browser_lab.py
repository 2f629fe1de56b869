"""The webmail (issue 14) in a real browser: Playwright driving Debian's Chromium on the lab.

The browser (qnprov_testing/webbrowser.py) trusts the lab CA through a private NSS
database and nothing is ignored: no ``ignore_https_errors``. It resolves only the lab's
official name, mapped with ``--host-resolver-rules`` to the published loopback port, so
the pages load from ``https://mail1.quangninh.test/`` as an official types it.

Everything is the real stack: nginx and Roundcube in the lab container, Dovecot behind
the login, Postfix submission behind the send, the mail read back over IMAP.
"""

from __future__ import annotations

import csv
import email
import email.header
import email.policy
import imaplib
import json
import re
import secrets
import ssl
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from labenv import require_env
from test_directory_lab import apply  # the lab's own roster import (accounts apply --partial)

from qnprov import paths
from qnprov_testing.webbrowser import LabBrowser, goto

pytestmark = pytest.mark.lab

OFFICIAL_NAME = "mail1.quangninh.test"
BASE = f"https://{OFFICIAL_NAME}/"
INBOX = f"{BASE}?_task=mail&_mbox=INBOX"
SUBJECT_PREFIX = "Báo cáo tuần – Sở Khoa học và Công nghệ – đề nghị phối hợp"
ATTACHMENT_NAME = "Báo cáo tuần 49 – Đơn vị.txt"
LOGIN_FORM = "#rcmloginuser"


def _endpoint(name: str) -> tuple[str, int]:
    host, _, port = json.loads(require_env("QNPROV_TEST_ENDPOINTS"))[name].rpartition(":")
    return host, int(port)


def _accounts() -> list[dict[str, str]]:
    return json.loads(require_env("QNPROV_TEST_ACCOUNTS"))


def lab_browser() -> LabBrowser:
    host, port = _endpoint("https")
    return LabBrowser({OFFICIAL_NAME: (host, port, 443)}, [Path(require_env("QNPROV_TEST_CA"))])


@pytest.fixture(scope="module")
def browser() -> Iterator[LabBrowser]:
    with lab_browser() as running:
        yield running


def _imap(address: str, password: str) -> imaplib.IMAP4_SSL:
    host, port = _endpoint("imaps")
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    context.load_verify_locations(cafile=require_env("QNPROV_TEST_CA"))
    client = imaplib.IMAP4_SSL(host, port, ssl_context=context, timeout=30)
    client.login(address, password)
    return client


def _imap_refuses(address: str, password: str) -> bool:
    try:
        _imap(address, password).logout()
    except imaplib.IMAP4.error:
        return True
    return False


def login(page: Any, address: str, password: str) -> Any:
    """Type the address and password into the login form and wait for the inbox; returns the
    response of the login page (its headers are checked)."""
    response = goto(page, BASE)
    assert response is not None and response.status == 200
    page.fill(LOGIN_FORM, address)
    page.fill("#rcmloginpwd", password)
    with page.expect_navigation():
        page.click("#rcmloginsubmit")
    page.wait_for_selector("#messagelist", state="attached")
    assert "_task=mail" in page.url, page.url
    return response


def open_inbox(page: Any) -> None:
    """Load the inbox and wait until Roundcube's list request has been answered and drawn."""
    with page.expect_response(lambda r: "_action=list" in r.url and r.status == 200, timeout=60_000):
        goto(page, INBOX)
    page.wait_for_function("() => window.rcmail && rcmail.message_list && !rcmail.busy")


def _upload_limit() -> int:
    """The role's configured upload limit in bytes (webmail_upload_max_size, e.g. ``25M``)."""
    defaults = yaml.safe_load((paths.PROJECT_ROOT / "roles" / "webmail" / "defaults" / "main.yml")
                              .read_text(encoding="utf-8"))
    size = str(defaults["webmail_upload_max_size"])
    found = re.fullmatch(r"(\d+)([KMG]?)", size)
    assert found, size
    return int(found.group(1)) * {"": 1, "K": 1 << 10, "M": 1 << 20, "G": 1 << 30}[found.group(2)]


def _messages(page: Any) -> list[str]:
    """Texts of Roundcube's message stack (display_message) currently shown."""
    return [text.strip() for text in page.locator("#messagestack > div").all_inner_texts()]


def test_the_browser_refuses_the_lab_page_without_the_lab_ca() -> None:
    # The same browser with an empty NSS database: the lab certificate is not trusted,
    # so the trust in the other tests comes from the lab CA, not from a skipped check.
    host, port = _endpoint("https")
    with LabBrowser({OFFICIAL_NAME: (host, port, 443)}, []) as untrusting:
        watched = untrusting.context()
        page = watched.page()
        with pytest.raises(Exception, match="ERR_CERT_AUTHORITY_INVALID"):
            page.goto(BASE)
        # And names other than the lab's do not resolve (no DNS query leaves the machine).
        with pytest.raises(Exception, match="ERR_NAME_NOT_RESOLVED"):
            page.goto("https://gmail.com/")
        watched.close()


@pytest.mark.mailflow
def test_send_with_a_vietnamese_subject_and_an_attachment_read_it_in_the_browser_and_log_out(
        browser: LabBrowser, tmp_path: Path) -> None:
    sender, recipient = _accounts()[0], _accounts()[1]
    subject = f"{SUBJECT_PREFIX} {uuid.uuid4().hex[:8]}"
    content = ("Kính gửi các đồng chí,\nĐề nghị phối hợp tổng hợp số liệu tuần 49.\n" * 200
               + secrets.token_hex(64) + "\n").encode("utf-8")
    attachment = tmp_path / ATTACHMENT_NAME
    attachment.write_bytes(content)

    # --- the sender, in Vietnamese -----------------------------------------------------
    writer = browser.context()
    page = writer.page()
    response = login(page, sender["address"], sender["password"])
    assert page.get_attribute("html", "lang") == "vi"
    headers = response.all_headers()
    csp = headers["content-security-policy"]
    assert "default-src 'self'" in csp and "frame-ancestors 'self'" in csp and "object-src 'none'" in csp
    assert headers["strict-transport-security"].startswith("max-age=31536000")
    assert headers["x-content-type-options"] == "nosniff"
    assert headers["x-frame-options"].upper() == "SAMEORIGIN"
    # The inbox page itself carries them too (the page the official works in).
    with page.expect_response(lambda r: "_action=list" in r.url and r.status == 200, timeout=60_000):
        inbox = goto(page, INBOX)
    assert inbox is not None and inbox.status == 200
    assert "frame-ancestors 'self'" in inbox.all_headers()["content-security-policy"]
    assert inbox.all_headers()["strict-transport-security"].startswith("max-age=")
    # The inbox works in the browser: its list answer is run, and no console error (a CSP
    # violation, a missing asset) so far; the errors are the failure's reason if it hangs.
    try:
        page.wait_for_function("() => window.rcmail && rcmail.message_list && !rcmail.busy", timeout=20_000)
    finally:
        assert not writer.errors, "\n".join(writer.errors)

    goto(page, f"{BASE}?_task=mail&_action=compose")
    page.wait_for_selector("#compose-subject")
    to_field = page.locator("ul.recipient-input input").first
    to_field.fill(recipient["address"])
    to_field.press(",")
    page.fill("#compose-subject", subject)
    page.fill("#composebody", "Kính gửi anh/chị,\nGửi kèm báo cáo tuần.\nTrân trọng.\n")
    page.set_input_files("#uploadform input[type=file]", str(attachment))
    listed = page.locator("#attachment-list li").filter(has_text=ATTACHMENT_NAME)
    listed.wait_for(timeout=60_000)
    page.locator("button.send").first.click()
    # Sent: Roundcube leaves the compose page for the mailbox (an error would keep it there, with its message).
    try:
        page.wait_for_url(re.compile(r"_task=mail&(_refresh=1&)?_mbox=INBOX"), timeout=120_000)
    except Exception as error:
        raise AssertionError(f"not sent: {_messages(page)} {writer.errors} at {page.url}") from error
    page.wait_for_selector("#messagelist", state="attached")
    assert not writer.errors, "\n".join(writer.errors)

    # --- the recipient, in a fresh context, opens it in the browser ---------------------
    reader = browser.context()
    page = reader.page()
    login(page, recipient["address"], recipient["password"])
    deadline = time.monotonic() + 120
    row = page.locator("#messagelist tr").filter(has_text=subject)
    while True:
        open_inbox(page)
        if row.count() or time.monotonic() > deadline:
            break
        time.sleep(3)
    assert row.count() == 1, f"{subject!r} is not in {recipient['address']}'s inbox list"
    with page.expect_navigation():
        row.first.dblclick()
    assert "_action=show" in page.url, page.url
    page.wait_for_selector("h2.subject")
    shown_subject = page.locator("h2.subject").inner_text()
    assert subject in shown_subject, shown_subject
    names = page.locator("#attachment-list li").all_inner_texts()
    assert any(ATTACHMENT_NAME in name for name in names), names

    # --- the same message over IMAP: the attachment's bytes and name ------------------
    imap = _imap(recipient["address"], recipient["password"])
    try:
        imap.select("INBOX", readonly=True)
        _typ, data = imap.uid("SEARCH", "CHARSET", "UTF-8", "SUBJECT", subject.split()[-1])
        uids = data[0].split()
        assert len(uids) == 1, uids
        _typ, fetched = imap.uid("FETCH", uids[0], "(BODY.PEEK[])")
    finally:
        imap.logout()
    message = email.message_from_bytes(fetched[0][1], policy=email.policy.default)
    assert str(message["Subject"]) == subject
    assert sender["address"] in str(message["From"]) and recipient["address"] in str(message["To"])
    parts = list(message.iter_attachments())  # type: ignore[attr-defined]
    assert [part.get_filename() for part in parts] == [ATTACHMENT_NAME]
    assert parts[0].get_payload(decode=True) == content

    # --- log out: the session is gone on the server, not only in this tab ---------------
    cookies = reader.context.cookies()
    assert any(cookie["name"] == "qnwm_sessauth" for cookie in cookies)
    with page.expect_navigation():
        page.locator("a.logout").first.click()
    page.wait_for_selector(LOGIN_FORM)
    goto(page, INBOX)
    assert page.locator(LOGIN_FORM).is_visible() and page.locator("#messagelist").count() == 0
    # The cookies from before the logout, replayed in another context, open nothing.
    replay = browser.context()
    replay.context.add_cookies(cookies)
    replayed = replay.page()
    goto(replayed, INBOX)
    assert replayed.locator(LOGIN_FORM).is_visible() and replayed.locator("#messagelist").count() == 0
    replay.close()

    assert not reader.errors, "\n".join(reader.errors)
    writer.close()
    reader.close()


_POST_PASSWORD_SAVE = """async ([token, current, chosen]) => {
    const form = new URLSearchParams({_task: 'settings', _action: 'plugin.password-save',
                                      _curpasswd: current, _newpasswd: chosen, _confpasswd: chosen});
    if (token !== null) form.set('_token', token);
    const answer = await fetch('/?_task=settings&_action=plugin.password-save',
                               {method: 'POST', body: form, credentials: 'same-origin', redirect: 'manual'});
    return {status: answer.status, text: await answer.text()};
}"""


def test_a_password_change_without_the_request_token_is_refused(browser: LabBrowser) -> None:
    account = _accounts()[2]
    watched = browser.context()
    page = watched.page()
    login(page, account["address"], account["password"])
    real_token = page.evaluate("rcmail.env.request_token")
    assert real_token
    chosen = "Qn-" + secrets.token_urlsafe(18)
    # Same origin, the session cookie sent, everything right but the token: absent, then wrong.
    for token in (None, secrets.token_hex(16)):
        answer = page.evaluate(_POST_PASSWORD_SAVE, [token, account["password"], chosen])
        # Roundcube answers with its CSRF error page (HTTP 200) and never reaches the plugin.
        assert "REQUEST CHECK FAILED" in answer["text"] and "secured against CSRF" in answer["text"], \
            (answer["status"], answer["text"][-600:])
        assert "confirmation" not in answer["text"] and "_curpasswd" not in answer["text"]
    # The directory still holds the old password: IMAP takes it and refuses the one sent.
    _imap(account["address"], account["password"]).logout()
    assert _imap_refuses(account["address"], chosen)
    # The session survives the refused requests.
    goto(page, INBOX)
    page.wait_for_selector("#messagelist", state="attached")
    watched.close()


def test_an_oversized_attachment_is_refused_with_a_clear_message_and_the_session_survives(
        browser: LabBrowser, tmp_path: Path) -> None:
    account = _accounts()[2]
    limit = _upload_limit()
    watched = browser.context()
    page = watched.page()
    login(page, account["address"], account["password"])
    goto(page, f"{BASE}?_task=mail&_action=compose")
    page.wait_for_selector("#compose-subject")
    # Roundcube's attachment limit is the configured size less base64's growth (max_message_size / 1.33).
    attachment_limit = page.evaluate("rcmail.env.max_filesize")
    assert abs(attachment_limit - limit / 1.33) < 1, (attachment_limit, limit)
    big = tmp_path / "ho-so-qua-lon.bin"
    with big.open("wb") as out:
        out.truncate(int(attachment_limit) + (1 << 20))
    page.set_input_files("#uploadform input[type=file]", str(big))
    error = page.locator("#messagestack > div.error")
    error.wait_for(timeout=30_000)
    text = error.inner_text()
    # Roundcube's Vietnamese "filesizeerror" (its English names the limit; the Vietnamese does not).
    assert "vượt quá dung lượng tối đa" in text, text
    assert page.locator("#attachment-list li").count() == 0

    # A client without the page's size check (the same upload posted straight from the page)
    # is refused by the server, and the session is still there.
    answer = page.evaluate("""async (size) => {
        const form = new FormData();
        form.append('_attachments[]', new Blob([new Uint8Array(size)]), 'ho-so-qua-lon.bin');
        const url = '/?_task=mail&_action=upload&_id=' + rcmail.env.compose_id + '&_uploadid=1&_from=compose'
                    + '&_remote=1';
        const answer = await fetch(url, {method: 'POST', body: form, credentials: 'same-origin',
                                         headers: {'X-Roundcube-Request': rcmail.env.request_token}});
        return {status: answer.status, text: await answer.text()};
    }""", limit + (1 << 20))
    assert answer["status"] == 413, (answer["status"], answer["text"][:300])
    goto(page, INBOX)
    page.wait_for_selector("#messagelist", state="attached")
    assert page.locator(LOGIN_FORM).count() == 0
    watched.close()


FORCED_FORM = "#qnfc-new"


def _must_change_account(tmp_path: Path, name: str) -> tuple[str, dict[str, str]]:
    """A new account from the lab's own roster import (accounts apply marks it pwdReset TRUE);
    returns its roster line and its hand-over row (address, initial_password)."""
    employee_id = f"P{uuid.uuid4().hex[:10].upper()}"
    person = f"{employee_id},QNTEST,{name},Chuyên viên,\n"
    created = apply(tmp_path, person, "--credentials-dir", str(tmp_path / "creds"))
    assert created["create"] == 1 and created["applied"] is True
    (row,) = list(csv.DictReader((tmp_path / "creds" / "QNTEST.csv").open(encoding="utf-8")))
    return person, row


def _disable(tmp_path: Path, person: str) -> None:
    """The lab as it was: the account disabled (the project's own way)."""
    disabled = apply(tmp_path, person.replace("Chuyên viên,\n", "Chuyên viên,left\n"), "--allow-mass-change")
    assert disabled["disable"] == 1


def _submit_login(page: Any, address: str, password: str) -> None:
    goto(page, BASE)
    page.fill(LOGIN_FORM, address)
    page.fill("#rcmloginpwd", password)
    with page.expect_navigation():
        page.click("#rcmloginsubmit")


def _submit_change(page: Any, new: str, again: str | None = None) -> None:
    page.fill(FORCED_FORM, new)
    page.fill("#qnfc-confirm", new if again is None else again)
    with page.expect_navigation():
        page.click("#qnfc-submit")


def test_an_initial_password_in_the_webmail_leads_to_the_forced_change_and_only_to_it(
        browser: LabBrowser, tmp_path: Path) -> None:
    """Issue 14's browser steps 1 and 2: an account fresh from ``accounts apply`` logs in with
    its initial password and gets the change form and nothing else; the directory's rules
    refuse a short password and the initial one (the reason shown); a valid one is taken;
    then IMAP refuses the initial password and takes the new one, and the webmail opens the
    inbox with the new one."""
    person, row = _must_change_account(tmp_path, "Phạm Thị Mật Khẩu Đầu")
    address, initial = row["address"], row["initial_password"]
    try:
        watched = browser.context()
        page = watched.page()
        _submit_login(page, address, initial)
        page.wait_for_selector(FORCED_FORM)
        assert "_action=plugin.qnprov_forcechange" in page.url, page.url
        assert address in page.inner_text("#qnfc-intro")
        assert page.inner_text("#qnfc-title") == "Đổi mật khẩu ban đầu"
        # Its POST goes to ?_task=login (nginx's login throttle counts it) with the request token.
        form = page.locator("form:has(#qnfc-new)")
        assert (form.get_attribute("method"), form.get_attribute("action")) == ("post", "/?_task=login")
        assert len(form.locator("input[name=_token]").get_attribute("value") or "") >= 16
        # A session with no user: no mail, no settings; the session cookie of a login is absent.
        assert not any(c["name"] == "qnwm_sessauth" for c in watched.context.cookies())
        goto(page, INBOX)
        assert page.locator(LOGIN_FORM).is_visible() and page.locator("#messagelist").count() == 0
        goto(page, f"{BASE}?_task=settings&_action=plugin.password")
        assert page.locator(LOGIN_FORM).is_visible() and page.locator("#_curpasswd").count() == 0
        # ... and the change form is still there for this session.
        goto(page, f"{BASE}?_task=login&_action=plugin.qnprov_forcechange")
        page.wait_for_selector(FORCED_FORM)

        _submit_change(page, "ngan-qua-9")  # 10 characters: the directory's minimum is 12
        page.wait_for_selector(FORCED_FORM)
        shown = " ".join(_messages(page))
        print(f"too short: {shown!r}")
        assert "Hệ thống từ chối mật khẩu mới: mật khẩu quá ngắn" in shown, shown
        assert "Password fails quality checking policy" in shown, shown

        _submit_change(page, initial)  # keeping the initial password
        page.wait_for_selector(FORCED_FORM)
        shown = " ".join(_messages(page))
        print(f"the initial one again: {shown!r}")
        assert "Hệ thống từ chối mật khẩu mới:" in shown, shown
        assert "Password is not being changed from existing value" in shown, shown

        _submit_change(page, "Ha Long bay 2026 moi", "Ha Long bay 2026 khac")
        page.wait_for_selector(FORCED_FORM)
        assert "Hai mật khẩu mới không giống nhau." in " ".join(_messages(page))
        assert _imap_refuses(address, "Ha Long bay 2026 moi")  # nothing was changed

        new = f"Vinh Ha Long {secrets.token_hex(4)} 2026"  # ASCII: imaplib's LOGIN sends ASCII only
        _submit_change(page, new)
        page.wait_for_selector(LOGIN_FORM)
        shown = " ".join(_messages(page))
        print(f"after the change: {shown!r}")
        assert "Đã đổi mật khẩu. Hãy đăng nhập bằng mật khẩu mới." in shown, shown
        assert page.locator(FORCED_FORM).count() == 0
        # The forced-change session is gone: its page now shows the login form.
        goto(page, f"{BASE}?_task=login&_action=plugin.qnprov_forcechange")
        assert page.locator(LOGIN_FORM).is_visible() and page.locator(FORCED_FORM).count() == 0

        # Dovecot: the initial password no longer works, the new one does.
        assert _imap_refuses(address, initial)
        client = _imap(address, new)
        typ, _ = client.select("INBOX")
        assert typ == "OK"
        client.logout()

        # Step 2: the webmail with the new password opens the inbox.
        login(page, address, new)
        open_inbox(page)
        assert any(c["name"] == "qnwm_sessauth" for c in watched.context.cookies())
        watched.close()
    finally:
        _disable(tmp_path, person)


def test_forced_change_gives_no_hint_for_a_wrong_password_and_refuses_a_post_without_the_token(
        browser: LabBrowser, tmp_path: Path) -> None:
    """A wrong password for an account that must change its password gets exactly the failure
    an unknown address gets (nothing tells which accounts exist), and the change form's POST
    without Roundcube's request token (a forged cross-site or scripted POST) is refused with
    403 and changes nothing. Once the account is disabled, its initial password gets the same
    generic failure."""
    person, row = _must_change_account(tmp_path, "Trần Văn Chưa Đổi")
    address, initial = row["address"], row["initial_password"]
    try:
        watched = browser.context()
        page = watched.page()
        answers = []
        for user, password in ((address, initial + "x"), (f"khong-co-{uuid.uuid4().hex[:8]}@quangninh.test", initial)):
            _submit_login(page, user, password)
            page.wait_for_selector(LOGIN_FORM)
            assert page.locator(FORCED_FORM).count() == 0
            assert "_action=plugin.qnprov_forcechange" not in page.url
            answers.append(" ".join(_messages(page)))
        print(f"wrong password / unknown address: {answers!r}")
        assert answers[0] == answers[1] and answers[0], answers

        _submit_login(page, address, initial)
        page.wait_for_selector(FORCED_FORM)
        forged = f"Gia mao {secrets.token_hex(4)} 2026"
        for token in (None, "0" * 32):
            answer = page.evaluate("""async ([password, token]) => {
                const form = new URLSearchParams({_task: 'login', _action: 'plugin.qnprov_forcechange',
                                                  _qnfc_new: password, _qnfc_confirm: password});
                if (token) form.append('_token', token);
                const answer = await fetch('/?_task=login', {method: 'POST', body: form, credentials: 'same-origin'});
                return {status: answer.status, text: await answer.text()};
            }""", [forged, token])
            print(f"POST without a valid token ({token!r}): {answer['status']}")
            assert answer["status"] == 403, (answer["status"], answer["text"][:300])
        # Nothing changed: the forged password opens nothing, the initial one still must change.
        assert _imap_refuses(address, forged)
        goto(page, f"{BASE}?_task=login&_action=plugin.qnprov_forcechange")
        page.wait_for_selector(FORCED_FORM)
        watched.close()
    finally:
        _disable(tmp_path, person)
    # Disabled (it still carries pwdReset and its initial password binds): the generic failure.
    watched = browser.context()
    page = watched.page()
    _submit_login(page, address, initial)
    page.wait_for_selector(LOGIN_FORM)
    assert page.locator(FORCED_FORM).count() == 0
    assert " ".join(_messages(page)) == answers[0]
    watched.close()
