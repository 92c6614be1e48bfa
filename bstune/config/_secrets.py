"""Secrets in storage URLs: never printed, stored or put on a command line.

A URL's userinfo (``user:password@``) is masked whole after the user name: a password may hold
an unencoded ``@`` or ``/`` (``postgresql://u:S@CRET/123@host/db``), so the userinfo runs to the
*last* ``@`` of the URL, not the first. Torch-free and Optuna-free: the config layer uses it.
"""

from __future__ import annotations

import re
from urllib.parse import quote, unquote

__all__ = ["mask_passwords", "mask_url", "mask_value", "password", "scrub"]

# scheme://user:...@ — the userinfo runs to the last "@" of the (space-free) URL.
_URL_USERINFO = re.compile(r"(\b[a-zA-Z][a-zA-Z0-9+.-]*://)([^:/@\s]*):\S*@")


def mask_passwords(text: str) -> str:
    """``text`` with the password of every ``scheme://user:password@`` URL in it masked.

    >>> mask_passwords("storage: postgresql://u:S@CRET/123@host/db  # old one: mysql://r:x@h/d")
    'storage: postgresql://u:***@host/db  # old one: mysql://r:***@h/d'
    """
    return _URL_USERINFO.sub(_masked, text)


def _masked(m: re.Match[str]) -> str:
    return f"{m.group(1)}{m.group(2)}:***@"


def mask_url(url: str) -> str:
    """``url`` with everything after the user name in its userinfo replaced by ``***``.

    >>> mask_url("postgresql://u:S@CRET/123@host/db")
    'postgresql://u:***@host/db'
    >>> mask_url("sqlite:///a:b@c.db")  # a path: no userinfo
    'sqlite:///a:b@c.db'
    """
    scheme, sep, rest = url.partition("://")
    if not sep or rest.startswith("/") or "@" not in rest:
        return url
    userinfo, _, host = rest.rpartition("@")
    user, colon, _ = userinfo.partition(":")
    return f"{scheme}://{user}{':***' * bool(colon)}@{host}" if colon else url


def mask_value(text: str) -> str:
    """A value meant to be a URL, safe to echo in an error: :func:`mask_passwords`, and for a
    value with no scheme, anything before its last ``@`` masked.

    >>> mask_value("postgres:u:pw@host/db")
    '***@host/db'
    """
    if "://" in text or "@" not in text:
        return mask_passwords(text)
    return "***@" + text.rpartition("@")[2]


def password(url: str) -> str | None:
    """The password of ``url``'s userinfo (running to its last ``@``), or None."""
    _, sep, rest = url.partition("://")
    if not sep or rest.startswith("/") or "@" not in rest:
        return None
    userinfo = rest.rpartition("@")[0]
    _, colon, secret = userinfo.partition(":")
    return secret if colon and secret else None


def scrub(text: str, url: str) -> str:
    """``text`` (e.g. a database driver's error) with every form of ``url``'s password in it,
    and the userinfo of any URL in it, masked."""
    secret = password(url)
    if secret:
        forms = {secret, unquote(secret), quote(secret, safe=""), quote(unquote(secret), safe="")}
        # Parsers that split the userinfo at its first "@" see only pieces of the password.
        forms |= {p for p in re.split(r"[@/:]", unquote(secret)) if len(p) >= 3}
        for form in sorted(forms, key=len, reverse=True):
            if form:
                text = text.replace(form, "***")
    return mask_passwords(text)
