"""Salted password hashes with the stdlib's scrypt.

Stored as ``scrypt$N$r$p$salt$hash`` (base64), so the cost can be raised later
without breaking the hashes already stored.
"""

import base64
import hashlib
import hmac
import os

import settings

_R, _P, _DKLEN = 8, 1, 32


def _b64(raw):
    return base64.b64encode(raw).decode("ascii")


def hash_password(password, *, cost=None):
    n = cost or settings.PASSWORD_HASH_COST
    salt = os.urandom(16)
    digest = hashlib.scrypt(password.encode(), salt=salt, n=n, r=_R, p=_P, maxmem=2**26, dklen=_DKLEN)
    return f"scrypt${n}${_R}${_P}${_b64(salt)}${_b64(digest)}"


def verify_password(password, stored):
    try:
        scheme, n, r, p, salt, digest = stored.split("$")
        if scheme != "scrypt":
            return False
        expected = base64.b64decode(digest)
        actual = hashlib.scrypt(
            password.encode(),
            salt=base64.b64decode(salt),
            n=int(n),
            r=int(r),
            p=int(p),
            maxmem=2**26,
            dklen=len(expected),
        )
    except (ValueError, TypeError):
        return False
    return hmac.compare_digest(actual, expected)
