"""Input rules shared by the HTTP API and the workers.

A form is a dict of field name to field; ``validate(data, form)`` returns the
clean values or raises ``Invalid`` naming every bad field and why. Forms
arrive as JSON or as HTML forms, where every value is a string, so whole
numbers written as digits are accepted; anything else of the wrong type is
refused, never guessed at.
"""

import re
import unicodedata

import settings

PG_INT_MAX = 2**31 - 1  # ids, counts and ages are PostgreSQL integers
FOLLOWERS_LOGIN_MAX = 32  # as the original's Message: @Assert\Length(max="32")
LOGIN_MAX = 64  # a follower's login is {followersLogin}_#{i}: up to 40 characters

_DIGITS = re.compile(r"[+-]?\d{1,12}")
_MISSING = object()


class Invalid(Exception):
    """Bad input: ``fields`` maps each bad field to what is wrong with it."""

    def __init__(self, fields):
        super().__init__("; ".join(f"{name}: {why}" for name, why in fields.items()))
        self.fields = fields


class Field:
    def __init__(self, *, default=_MISSING):
        self.default = default

    def clean(self, value):
        raise NotImplementedError


class Integer(Field):
    def __init__(self, *, minimum=0, maximum=PG_INT_MAX, default=_MISSING):
        super().__init__(default=default)
        self.minimum = minimum
        self.maximum = maximum

    def clean(self, value):
        maximum = self.maximum() if callable(self.maximum) else self.maximum
        if isinstance(value, str) and _DIGITS.fullmatch(value.strip()):
            value = int(value.strip())
        if isinstance(value, bool) or not isinstance(value, int):
            raise ValueError(f"must be a whole number from {self.minimum} to {maximum}")
        if not self.minimum <= value <= maximum:
            raise ValueError(f"must be from {self.minimum} to {maximum}, got {value}")
        return value


class Text(Field):
    """A single line of text: no control characters (they break logs and
    terminals, and PostgreSQL refuses NUL)."""

    def __init__(self, *, max_length, min_length=1, default=_MISSING):
        super().__init__(default=default)
        self.min_length = min_length
        self.max_length = max_length

    def clean(self, value):
        if not isinstance(value, str):
            raise ValueError("must be a string")
        if not self.min_length <= len(value) <= self.max_length:
            raise ValueError(f"must be {self.min_length} to {self.max_length} characters long, got {len(value)}")
        if any(unicodedata.category(char) in ("Cc", "Cf", "Cs") for char in value):
            raise ValueError("must not contain control characters")
        return value


class Boolean(Field):
    _WORDS = {"true": True, "1": True, "false": False, "0": False}

    def clean(self, value):
        if isinstance(value, bool):
            return value
        if isinstance(value, int) and value in (0, 1):
            return bool(value)
        if isinstance(value, str) and value.strip().lower() in self._WORDS:
            return self._WORDS[value.strip().lower()]
        raise ValueError("must be true or false")


def validate(data, form, *, strict=False):
    """Clean ``data`` (a mapping) against ``form``; with ``strict``, fields
    the form does not know are refused too (messages), not ignored (HTTP)."""
    if not isinstance(data, dict):
        raise Invalid({"body": "must be an object of named fields"})
    clean, errors = {}, {}
    for name, field in form.items():
        value = data.get(name, _MISSING)
        if value is _MISSING or value == "":
            if field.default is _MISSING:
                errors[name] = "is required"
            else:
                clean[name] = field.default
            continue
        try:
            clean[name] = field.clean(value)
        except ValueError as error:
            errors[name] = str(error)
    if strict:
        for name in data.keys() - form.keys():
            errors[name] = "is not a known field"
    if errors:
        raise Invalid(errors)
    return clean


# --- The forms ---------------------------------------------------------------

NEW_USER = {
    "login": Text(max_length=LOGIN_MAX),
    "password": Text(max_length=128),
    "age": Integer(),
    "isActive": Boolean(default=True),
}

NEW_SUBSCRIPTION = {
    "authorId": Integer(minimum=1),
    "followerId": Integer(minimum=1),
}

ADD_FOLLOWERS = {
    "userId": Integer(minimum=1),
    "followersLogin": Text(max_length=FOLLOWERS_LOGIN_MAX),
    "count": Integer(maximum=lambda: settings.MAX_FOLLOWERS_PER_REQUEST),
    "async": Integer(maximum=1, default=0),
}

PAGE = {
    "limit": Integer(minimum=1, maximum=1000, default=100),
    "offset": Integer(default=0),
}

#: One unit of work, as an ``add_followers`` message carries it.
UNIT = {
    "job_id": Integer(minimum=1),
    "chunk": Integer(),
    "user_id": Integer(minimum=1),
    "followers_login": Text(max_length=FOLLOWERS_LOGIN_MAX),
    "start": Integer(),
    "count": Integer(minimum=1),
}
