"""What every HTTP client of the lab's Roundcube does the same way: keep its cookies, find
the request (CSRF) token in a page, and fill in the login form. Used by the webmail and
autoconfig lab tests and by benchmarks/webmail.py, each with its own connection handling."""

from __future__ import annotations

import re
from collections.abc import Iterable, MutableMapping

_TOKEN = (re.compile(r'"request_token":"([^"]+)"'), re.compile(r'name="_token" value="([^"]+)"'))


def store_cookies(jar: MutableMapping[str, str], set_cookie_headers: Iterable[str] | None) -> None:
    """Apply the answer's Set-Cookie headers: Roundcube deletes a cookie by setting it empty,
    to "-del-" or to "deleted"."""
    for raw in set_cookie_headers or []:
        name, _, rest = raw.partition("=")
        value = rest.split(";", 1)[0]
        if value in ("", "-del-", "deleted"):
            jar.pop(name, None)
        else:
            jar[name] = value


def cookie_header(jar: MutableMapping[str, str]) -> str:
    return "; ".join(f"{name}={value}" for name, value in jar.items())


def request_token(page: str | bytes) -> str | None:
    """The request token a Roundcube page carries (its environment, or a form field)."""
    text = page.decode("utf-8", "replace") if isinstance(page, bytes) else page
    for pattern in _TOKEN:
        found = pattern.search(text)
        if found:
            return found.group(1)
    return None


def login_form(token: str, address: str, password: str) -> dict[str, str]:
    """The fields Roundcube's login page POSTs to /?_task=login."""
    return {"_token": token, "_task": "login", "_action": "login", "_timezone": "Asia/Ho_Chi_Minh", "_url": "",
            "_user": address, "_pass": password}
