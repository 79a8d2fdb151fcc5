"""Salted password hashes with scrypt.

Stored as ``scrypt$N$r$p$salt$hash`` (base64), so the cost can be raised later
without breaking the hashes already stored.

Computed by libsodium (PyNaCl) or by the stdlib's ``hashlib.scrypt``
(OpenSSL), whichever takes less CPU on this machine (``_fastest``, timed
once per process): they give the same bytes for the same parameters, and
hashes stored by either verify with either, but neither is the faster
everywhere. libsodium took ~15% less CPU on the machine of the seventh
session (docs/benchmark.md); OpenSSL 26.5 ms against libsodium's 45.6 ms
on the AMD EPYC of the ninth. Every async job pays one hash, ~90% of a
one-follower job's worker CPU, and every sync request one.

Every hash runs on one of a few threads of the process's own
(``_scrypt``): scrypt takes 128·r·N bytes (16 MB at the default cost) for a
hash, so ``os.cpu_count()`` threads bound what hashes hold at once; and no
hash waits for a core it could have had, since scrypt is all CPU (it
releases the GIL). (With OpenSSL's scrypt the bound mattered more: glibc
kept a freed block that large in the arena of each thread that had hashed,
~130 MB in a worker of 8 threads; docs/benchmark.md, the memory row.)

Native threads even in the API, whose gevent worker (gunicorn.conf.py)
turns ``threading``'s threads into greenlets: a hash on a greenlet would
stop every other request of the process for its ~35 ms.
"""

import base64
import functools
import hashlib
import hmac
import logging
import os
import sys
import time
from concurrent.futures import ThreadPoolExecutor

from nacl.bindings import crypto_pwhash_scryptsalsa208sha256_ll as sodium_scrypt

import settings

logger = logging.getLogger(f"followers.{__name__}")
_R, _P, _DKLEN = 8, 1, 32
_MAXMEM = 2**26  # 64 MB: up to N=2**15 at r=8, twice the default cost
_MIN_DKLEN = 16  # a stored digest shorter than this is not one of ours (an empty one would match anything)


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


def _libsodium(password, *, salt, n, r, p, dklen):
    return sodium_scrypt(password, salt, n, r, p, dklen=dklen, maxmem=_MAXMEM)


def _openssl(password, *, salt, n, r, p, dklen):
    return hashlib.scrypt(password, salt=salt, n=n, r=r, p=p, dklen=dklen, maxmem=_MAXMEM)


#: The two scrypts, which give the same bytes (tests/test_passwords.py).
IMPLEMENTATIONS = {"libsodium": _libsodium, "openssl": _openssl}


@functools.cache
def _fastest():
    """The implementation that takes less CPU for a hash at
    PASSWORD_HASH_COST here, timed twice each on the thread that calls it
    (once per process: ~4 hashes, ~0.15 s of CPU at the default cost)."""

    def cpu_ms(derive):
        started = time.thread_time()
        derive(b"timing", salt=bytes(16), n=settings.PASSWORD_HASH_COST, r=_R, p=_P, dklen=_DKLEN)
        return (time.thread_time() - started) * 1000

    spent = {name: min(cpu_ms(derive) for _ in range(2)) for name, derive in IMPLEMENTATIONS.items()}
    fastest = min(spent, key=spent.__getitem__)
    logger.info("scrypt by %s: %s ms of CPU a hash (N=%d)", fastest,
                ", ".join(f"{name} {ms:.1f}" for name, ms in spent.items()), settings.PASSWORD_HASH_COST)
    return IMPLEMENTATIONS[fastest]


def _derive(password, **params):
    """scrypt; raises ValueError (or OverflowError) for parameters it refuses."""
    return _fastest()(password, **params)


def _scrypt(password, **params):
    """``_derive``, on one of this process's hashing threads."""
    return _hashing_threads(os.getpid()).submit(_derive, password, **params).result()


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
        if len(expected) < _MIN_DKLEN:
            return False
        actual = _scrypt(
            password.encode(),
            salt=base64.b64decode(salt),
            n=int(n),
            r=int(r),
            p=int(p),
            dklen=len(expected),
        )
    except (ValueError, TypeError, OverflowError):
        return False
    return hmac.compare_digest(actual, expected)
