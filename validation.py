"""Input rules shared by the HTTP API and the workers.

A form is a dict of field name to field; ``validate(data, form)`` returns the
clean values or raises ``Invalid`` naming every bad field and why. Forms
arrive as JSON or as HTML forms, where every value is a string, so whole
numbers written as digits are accepted; anything else of the wrong type is
refused, never guessed at. With ``typed`` (a JSON body) values must have
their JSON type: a number written as a string is refused there.
"""

import re
import unicodedata

import settings

PG_INT_MAX = 2**31 - 1  # ids, counts and ages are PostgreSQL integers
FOLLOWERS_LOGIN_MAX = 32  # as the original's Message: @Assert\Length(max="32")
LOGIN_MAX = 64  # a follower's login is {followersLogin}_#{i}: up to 40 characters

# A whole number as str() writes an int or an integral float: ASCII digits,
# no sign but "-", no leading zero, no spaces (what a form sends, and what
# OpenAPI and JSON can describe).
_DIGITS = re.compile(r"-?(0|[1-9][0-9]{0,11})(\.0+)?")
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

    def clean_typed(self, value):
        """A value of a JSON document: strings are taken only by text fields."""
        return self.clean(value)


class Integer(Field):
    def __init__(self, *, minimum=0, maximum=PG_INT_MAX, default=_MISSING):
        super().__init__(default=default)
        self.minimum = minimum
        self.maximum = maximum

    def clean(self, value):
        maximum = self.maximum() if callable(self.maximum) else self.maximum
        if isinstance(value, str) and _DIGITS.fullmatch(value):
            value = float(value) if "." in value else int(value)
        if isinstance(value, float) and value.is_integer():  # JSON's 8.0 is 8
            value = int(value)
        if isinstance(value, bool) or not isinstance(value, int):
            raise ValueError(f"must be a whole number from {self.minimum} to {maximum}")
        if not self.minimum <= value <= maximum:
            raise ValueError(f"must be from {self.minimum} to {maximum}, got {value}")
        return value

    def clean_typed(self, value):
        if isinstance(value, str):
            raise ValueError("must be a whole number (a JSON number, not a string)")
        return self.clean(value)


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

    def clean_typed(self, value):
        if not isinstance(value, bool):
            raise ValueError("must be true or false (a JSON boolean)")
        return value


class Choice(Field):
    """One of a few words."""

    def __init__(self, choices, *, default=_MISSING):
        super().__init__(default=default)
        self.choices = tuple(choices)

    def clean(self, value):
        if value not in self.choices:
            raise ValueError(f"must be one of {', '.join(self.choices)}")
        return value


def validate(data, form, *, strict=False, typed=False):
    """Clean ``data`` (a mapping) against ``form``; with ``strict``, fields
    the form does not know are refused too (messages), not ignored (HTTP);
    with ``typed`` (JSON bodies) a value must have its JSON type, and an
    empty string is a value, not a missing field."""
    if not isinstance(data, dict):
        raise Invalid({"body": "must be an object of named fields"})
    clean, errors = {}, {}
    for name, field in form.items():
        value = data.get(name, _MISSING)
        if value is _MISSING or (value == "" and not typed):
            if field.default is _MISSING:
                errors[name] = "is required"
            else:
                clean[name] = field.default
            continue
        try:
            clean[name] = field.clean_typed(value) if typed else field.clean(value)
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
    # The `next` link's: the last subscription id of the page before.
    "cursor": Integer(default=0),
}

#: One unit of work, as an ``add_followers`` message names it.
UNIT = {
    "job_id": Integer(minimum=1),
    "unit": Integer(),
}
