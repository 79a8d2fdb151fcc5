import passwords


def test_hash_is_salted_and_verifies():
    first, second = passwords.hash_password("secret"), passwords.hash_password("secret")
    assert first != second and first.startswith("scrypt$")
    assert passwords.verify_password("secret", first)
    assert not passwords.verify_password("Secret", first)


def test_garbage_never_verifies():
    assert not passwords.verify_password("secret", "plain-text")
    assert not passwords.verify_password("secret", "scrypt$x$8$1$AA==$AA==")
