"""Who may use the console, and its forms' protection.

With ``API_TOKEN`` set, the console asks for the token once, through a login
form, then keeps a session cookie signed with a key derived from the token
(HMAC-SHA256; changing the token ends every session). The cookie is
HttpOnly (no script reads it) and SameSite=Strict (no other site's page
sends it). Every form that changes something carries a CSRF token derived
from the session, checked in constant time: a page of another site can
neither read it nor guess it. Without ``API_TOKEN`` the console is open, as
the API is, and each visitor gets an unsigned session that serves only the
CSRF check.
"""

import base64
import hashlib
import hmac
import posixpath
import re
import secrets
import time
from urllib.parse import quote

import falcon

from .pages import render

COOKIE = "followers_console"
COOKIE_PATH = "/console"
LOGIN_PATH = "/console/login"


def _mac(key, text):
    digest = hmac.new(key, text.encode(), hashlib.sha256).digest()
    return base64.urlsafe_b64encode(digest).decode().rstrip("=")


class Sessions:
    """Issues and checks session cookies ``nonce.expires.signature``.

    Parameters:
      token(str): API_TOKEN; empty: the console is open.
      max_age(int): Seconds a session lasts.
    """

    def __init__(self, *, token, max_age):
        self.token = token or ""
        self.key = hmac.new(self.token.encode(), b"followers console session", hashlib.sha256).digest()
        self.max_age = max_age

    @property
    def login_required(self):
        return bool(self.token)

    def token_matches(self, candidate):
        return same_secret(candidate, self.token)

    def issue(self):
        payload = f"{secrets.token_urlsafe(16)}.{int(time.time()) + self.max_age}"
        return f"{payload}.{_mac(self.key, payload)}"

    def nonce(self, cookie):
        """The session's nonce if the cookie is one of ours and current, else None."""
        nonce, _, rest = (cookie or "").partition(".")
        expires, _, signature = rest.partition(".")
        if not (nonce and expires.isdigit() and signature):
            return None
        if not hmac.compare_digest(signature, _mac(self.key, f"{nonce}.{expires}")) or int(expires) < time.time():
            return None
        return nonce

    def csrf_token(self, nonce):
        return _mac(self.key, f"csrf {nonce}")


def same_secret(sent, secret):
    """Whether ``sent`` (anything a form or JSON body held) is ``secret``,
    in constant time. A lone surrogate, valid in JSON, cannot be encoded
    strictly (it was a 500): "surrogatepass" gives bytes that never match."""
    return isinstance(sent, str) and hmac.compare_digest(
        sent.encode("utf-8", "surrogatepass"), secret.encode("utf-8", "surrogatepass")
    )


def set_session_cookie(req, resp, value, max_age):
    # Secure when either header says https: Falcon's forwarded_scheme reads
    # a Forwarded header first, and falls back to http when that one has no
    # proto, though nginx's X-Forwarded-Proto says https.
    https = req.forwarded_scheme == "https" or (req.get_header("X-Forwarded-Proto") or "").lower() == "https"
    resp.set_cookie(COOKIE, value, max_age=max_age, path=COOKIE_PATH, http_only=True, same_site="Strict",
                    secure=https)


class ConsoleAccess:
    """Guards the console's resources (those with ``console = True``): a
    session or a redirect to the login form, and the CSRF token on every
    POST (but the login form's, which has no session to bind it to).

    Parameters:
      sessions(Sessions): Issues and checks the session cookies.
    """

    def __init__(self, *, sessions):
        self.sessions = sessions

    def process_resource(self, req, resp, resource, params):
        if not getattr(resource, "console", False):
            return
        nonce = next(filter(None, map(self.sessions.nonce, req.get_cookie_values(COOKIE) or [])), None)
        public = getattr(resource, "console_public", False)
        if nonce is None and not self.sessions.login_required:
            cookie = self.sessions.issue()  # open console: a session only for the CSRF check
            set_session_cookie(req, resp, cookie, self.sessions.max_age)
            nonce = self.sessions.nonce(cookie)
        if nonce is None:
            if public:
                return
            raise falcon.HTTPSeeOther(f"{LOGIN_PATH}?next={quote(req.relative_uri, safe='')}")
        req.context.logged_in = self.sessions.login_required
        req.context.csrf = self.sessions.csrf_token(nonce)
        if req.method == "POST" and not public:
            form = req.get_media() if req.content_length else {}
            sent = form.get("csrf") if isinstance(form, dict) else None
            if not same_secret(sent, req.context.csrf):
                raise falcon.HTTPForbidden(
                    title="forbidden", description="the form's CSRF token is missing or stale: reload the page"
                )


def redirect(resp, location):
    """303 to a page, keeping the cookies set on ``resp``."""
    resp.status = falcon.HTTP_303
    resp.location = location


def _safe_next(target):
    """Only a path of the console itself: never a redirect elsewhere, nor
    out of the console by dot segments, which a browser resolves (also
    written %2e), nor a path that cannot be encoded (a lone surrogate)."""
    if not isinstance(target, str) or not target.startswith("/console") or target.startswith("//"):
        return "/console"
    try:
        target.encode()
    except UnicodeEncodeError:
        return "/console"
    path, mark, query = target.partition("?")
    path = posixpath.normpath(re.sub("%2e", ".", path, flags=re.IGNORECASE))
    if path != "/console" and not path.startswith("/console/"):
        return "/console"
    return path + mark + query


class LoginResource:
    console = True
    console_public = True

    def __init__(self, *, sessions):
        self.sessions = sessions

    def on_get(self, req, resp):
        if not self.sessions.login_required:
            raise falcon.HTTPSeeOther("/console")
        render(req, resp, "login.html", next=_safe_next(req.get_param("next")), failed=False)

    def on_post(self, req, resp):
        form = req.get_media() if req.content_length else {}
        form = form if isinstance(form, dict) else {}
        target = _safe_next(form.get("next"))
        if not self.sessions.login_required:
            redirect(resp, target)
            return
        if not self.sessions.token_matches(form.get("token")):
            render(req, resp, "login.html", status=falcon.HTTP_401, next=target, failed=True)
            resp.set_header("WWW-Authenticate", 'Bearer realm="console"')  # what a 401 must say; the form asks again
            return
        set_session_cookie(req, resp, self.sessions.issue(), self.sessions.max_age)
        redirect(resp, target)


class LogoutResource:
    console = True

    def on_post(self, req, resp):
        resp.unset_cookie(COOKIE, path=COOKIE_PATH)
        redirect(resp, LOGIN_PATH)
