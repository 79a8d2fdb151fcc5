"""Salted password hashes with the stdlib's scrypt.

Stored as ``scrypt$N$r$p$salt$hash`` (base64), so the cost can be raised later
without breaking the hashes already stored.

Every hash runs on one of a few threads of the process's own
(``_scrypt``): scrypt takes 128·r·N bytes (16 MB at the default cost) for a
hash, and glibc keeps a freed block that large in the arena of the thread
that freed it. A worker whose 8 threads had each hashed once held ~130 MB it
never used again (docs/benchmark.md: the memory row). On ``os.cpu_count()``
threads that is at most that many blocks, each reused by the next hash on
its thread; and no hash waits for a core it could have had, since scrypt is
all CPU (it releases the GIL).

Native threads even in the API, whose gevent worker (gunicorn.conf.py)
turns ``threading``'s threads into greenlets: a hash on a greenlet would
stop every other request of the process for its ~50 ms.
"""

import base64
import functools
import hashlib
import hmac
import os
import sys
from concurrent.futures import ThreadPoolExecutor

import settings

_R, _P, _DKLEN = 8, 1, 32


def _b64(raw):
    return base64.b64encode(raw).decode("ascii")


def _native_thread_pool():
    """gevent's pool of native threads (its futures waited on as greenlets)
    where gevent has patched ``threading``; the stdlib's otherwise."""
    monkey = sys.modules.get("gevent.monkey")
    if monkey is not None and monkey.is_module_patched("threading"):
        from gevent.threadpool import ThreadPoolExecutor as GeventNativeThreadPool

        return GeventNativeThreadPool
    return ThreadPoolExecutor


@functools.cache
def _hashing_threads(pid):
    # One pool per process (the pid is the key): a pool's threads never cross a fork.
    return _native_thread_pool()(max_workers=os.cpu_count() or 1, thread_name_prefix="scrypt")


def _scrypt(password, **params):
    """hashlib.scrypt, on one of this process's hashing threads."""
    return _hashing_threads(os.getpid()).submit(hashlib.scrypt, password, maxmem=2**26, **params).result()


def hash_password(password, *, cost=None):
    n = cost or settings.PASSWORD_HASH_COST
    salt = os.urandom(16)
    digest = _scrypt(password.encode(), salt=salt, n=n, r=_R, p=_P, dklen=_DKLEN)
    return f"scrypt${n}${_R}${_P}${_b64(salt)}${_b64(digest)}"


def verify_password(password, stored):
    try:
        scheme, n, r, p, salt, digest = stored.split("$")
        if scheme != "scrypt":
            return False
        expected = base64.b64decode(digest)
        actual = _scrypt(
            password.encode(),
            salt=base64.b64decode(salt),
            n=int(n),
            r=int(r),
            p=int(p),
            dklen=len(expected),
        )
    except (ValueError, TypeError):
        return False
    return hmac.compare_digest(actual, expected)
