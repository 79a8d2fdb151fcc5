"""Pure unit tests of the input rules shared by the API and the workers."""

import pytest

import validation
from validation import ADD_FOLLOWERS, UNIT, Invalid, validate


def test_form_values_as_digit_strings_are_whole_numbers():
    clean = validate({"userId": "7", "followersLogin": "bob", "count": "10", "async": "1"}, ADD_FOLLOWERS)
    assert clean == {"userId": 7, "followersLogin": "bob", "count": 10, "async": 1}


def test_async_defaults_to_zero():
    assert validate({"userId": 1, "followersLogin": "bob", "count": 0}, ADD_FOLLOWERS)["async"] == 0


@pytest.mark.parametrize(
    "field, value, why",
    [
        ("userId", 0, "must be from 1"),
        ("userId", 2**31, "must be from 1"),
        ("userId", "12abc", "whole number"),
        ("userId", True, "whole number"),
        ("userId", 1.5, "whole number"),
        ("count", -1, "must be from 0"),
        ("count", 100_001, "to 100000"),
        ("followersLogin", "x" * 33, "1 to 32 characters"),
        ("followersLogin", 123, "must be a string"),
        ("followersLogin", "bad\x00login", "control characters"),
        ("async", 2, "must be from 0 to 1"),
    ],
)
def test_each_bad_field_is_named_with_the_reason(field, value, why):
    data = {"userId": 1, "followersLogin": "bob", "count": 1, field: value}
    with pytest.raises(Invalid) as caught:
        validate(data, ADD_FOLLOWERS)
    assert list(caught.value.fields) == [field]
    assert why in caught.value.fields[field]


def test_every_missing_field_is_reported_at_once():
    with pytest.raises(Invalid) as caught:
        validate({}, ADD_FOLLOWERS)
    assert set(caught.value.fields) == {"userId", "followersLogin", "count"}


def test_unicode_logins_are_fine():
    assert validate({"userId": 1, "followersLogin": "Пётр_ü", "count": 1}, ADD_FOLLOWERS)["followersLogin"] == "Пётр_ü"


def test_messages_are_strict_about_unknown_fields():
    unit = {"job_id": 1, "unit": 0}
    assert validate(unit, UNIT, strict=True) == unit
    with pytest.raises(Invalid) as caught:
        validate({**unit, "extra": 1}, UNIT, strict=True)
    assert caught.value.fields == {"extra": "is not a known field"}


def test_a_body_that_is_not_an_object_is_refused():
    with pytest.raises(Invalid) as caught:
        validate([1, 2], ADD_FOLLOWERS)
    assert "body" in caught.value.fields


def test_booleans_accept_form_words():
    field = validation.Boolean()
    assert [field.clean(v) for v in ("true", "0", 1, False)] == [True, False, True, False]
    with pytest.raises(ValueError):
        field.clean("maybe")
