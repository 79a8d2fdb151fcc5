import base64
import hashlib
import logging
import os
import re
import subprocess
import sys
import time

import passwords
from tests.conftest import ROOT


def test_hash_is_salted_and_verifies():
    first, second = passwords.hash_password("secret"), passwords.hash_password("secret")
    assert first != second and first.startswith("scrypt$")
    assert passwords.verify_password("secret", first)
    assert not passwords.verify_password("Secret", first)


def test_garbage_never_verifies():
    assert not passwords.verify_password("secret", "plain-text")
    assert not passwords.verify_password("secret", "scrypt$x$8$1$AA==$AA==")
    for n, r, p in ((3, 8, 1), (16384, 0, 1), (16384, 8, 0), (2**30, 8, 1), (16384, 8, 2**70)):  # refused
        assert not passwords.verify_password("secret", f"scrypt${n}${r}${p}$AAAA$" + "A" * 44)
    # An empty digest would match any password (libsodium derives 0 bytes without complaint).
    assert not passwords.verify_password("secret", "scrypt$16384$8$1$AAAA$")


def test_both_scrypts_give_the_same_bytes_so_stored_hashes_keep_verifying_whichever_runs():
    """libsodium's scrypt and OpenSSL's (hashlib.scrypt, which earlier
    releases stored) make the same hash: a process that picks the other
    one (``passwords._fastest``) verifies what the last one stored."""
    salt = os.urandom(16)
    made = {name: derive(b"secret", salt=salt, n=1024, r=8, p=1, dklen=32)
            for name, derive in passwords.IMPLEMENTATIONS.items()}
    assert made["libsodium"] == made["openssl"] == hashlib.scrypt(b"secret", salt=salt, n=1024, r=8, p=1, dklen=32)
    stored = f"scrypt$1024$8$1${base64.b64encode(salt).decode()}${base64.b64encode(made['openssl']).decode()}"
    assert passwords.verify_password("secret", stored) and not passwords.verify_password("Secret", stored)


def test_the_scrypt_that_takes_less_cpu_here_is_the_one_used(monkeypatch, caplog):
    def burning(ms, digest):
        def derive(password, **params):
            end = time.thread_time() + ms / 1000
            while time.thread_time() < end:
                pass
            return digest
        return derive

    monkeypatch.setattr(passwords, "IMPLEMENTATIONS", {"slow": burning(30, b"s" * 32), "quick": burning(3, b"q" * 32)})
    passwords._fastest.cache_clear()
    try:
        with caplog.at_level(logging.INFO, logger="followers.passwords"):
            assert passwords.hash_password("secret").endswith("$" + base64.b64encode(b"q" * 32).decode())
        assert re.search(r"scrypt by quick: slow 3\d\.\d, quick 3\.\d ms of CPU a hash", caplog.text), caplog.text
    finally:
        passwords._fastest.cache_clear()


def test_hashing_on_many_threads_keeps_few_scrypt_blocks():
    """A scrypt block (16 MB at N=2**14) stays with the thread that hashed:
    threads beyond the cores must not each keep one. Run in a fresh
    process, so its memory is this test's alone."""
    script = """
import os, threading
import passwords

def rss_mb():
    with open("/proc/self/status") as status:
        return next(int(line.split()[1]) for line in status if line.startswith("VmRSS")) / 1024

cores = os.cpu_count() or 1
before = rss_mb()
def hash_twice():
    for _ in range(2):
        passwords.hash_password("secret", cost=2**14)
threads = [threading.Thread(target=hash_twice) for _ in range(cores + 6)]
for thread in threads:
    thread.start()
for thread in threads:
    thread.join()
print(cores, rss_mb() - before)
"""
    result = subprocess.run([sys.executable, "-c", script], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    cores, growth_mb = result.stdout.split()
    # One block per core at most (each thread that hashed would keep cores + 6).
    assert float(growth_mb) < (int(cores) + 3) * 16, f"{growth_mb} MB kept after hashing on {int(cores) + 6} threads"


def test_under_gevent_a_hash_leaves_the_other_requests_running():
    """The API's gevent worker makes ``threading``'s threads greenlets: a
    hash run on one would stop every greenlet of the process until it ends.
    Here a greenlet keeps ticking; it must tick while a hash is running.
    A fresh process, since gevent patches the whole interpreter."""
    script = """
from gevent import monkey
monkey.patch_all()
import gevent
import passwords

state = {"hashing": False, "ticks": 0}
real_derive = passwords._derive
def derive(*args, **kwargs):
    state["hashing"] = True
    try:
        return real_derive(*args, **kwargs)
    finally:
        state["hashing"] = False
passwords._derive = derive

def tick():
    while True:
        state["ticks"] += state["hashing"]
        gevent.sleep(0.001)
ticker = gevent.spawn(tick)
stored = passwords.hash_password("secret", cost=2**14)
ticker.kill()
print(state["ticks"], passwords.verify_password("secret", stored))
"""
    result = subprocess.run([sys.executable, "-c", script], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    ticks, verified = result.stdout.split()
    assert verified == "True"
    assert int(ticks) > 0, "no other greenlet ran while the hash did: it ran on a greenlet, not a native thread"
