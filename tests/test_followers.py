"""The domain against the real PostgreSQL: what a user would count in the
database after each call."""

import datetime
import time

import pytest

import followers
from db import FollowerCount, Subscription, User, database
from passwords import hash_password, verify_password


def test_sync_add_creates_users_and_subscriptions(author):
    assert followers.add_followers_now(author, "fan", 25) == (25, 0)
    fans = list(author.followers())
    assert [u.login for u in fans] == [f"fan_#{i}" for i in range(25)]
    assert [u.age for u in fans] == list(range(25))
    assert all(u.is_active for u in fans)
    assert verify_password("fan", fans[0].password)
    assert fans[0].password == fans[-1].password  # hashed once per request


def test_repeating_a_request_creates_nothing_new(author):
    followers.add_followers_now(author, "fan", 10)
    assert followers.add_followers_now(author, "fan", 15) == (5, 10)
    assert User.select().where(User.login.startswith("fan_#")).count() == 15
    assert Subscription.select().where(Subscription.author == author).count() == 15


def test_a_repeated_request_fails_no_statement(author, monkeypatch):
    """A client's retry finds the range's first login there: no statement
    fails, so PostgreSQL's log shows no unique violation for it (a range
    whose first login is new and another taken still does: the savepoint
    test below)."""
    followers.add_followers_now(author, "fan", 10)
    failed = []
    execute_sql = database.execute_sql

    def recording(sql, params=None):
        try:
            return execute_sql(sql, params)
        except Exception as error:
            failed.append(error)
            raise

    monkeypatch.setattr(database, "execute_sql", recording)
    assert followers.add_followers_now(author, "fan", 10) == (0, 10)
    assert followers.add_followers_now(author, "fan", 12) == (2, 10)
    assert failed == []
    assert FollowerCount.of_user(author.id) == 12


def test_existing_login_is_skipped_and_not_subscribed(author):
    other = followers.create_user("other", "pw", 1)
    taken = followers.create_user("fan_#3", "pw", 99)
    followers.add_followers_now(other, "fan", 5)  # other gets fan_#0..4 except #3
    assert followers.add_followers_now(author, "fan", 6) == (1, 5)
    assert [u.login for u in author.followers()] == ["fan_#5"]
    assert User.get_by_id(taken.id).age == 99


def test_a_range_with_an_existing_login_leaves_the_callers_transaction_going(author):
    """The first try (without ON CONFLICT) fails on the existing login in a
    savepoint: the caller's transaction goes on, and the second try skips
    that login only; the follower count stays exact."""
    followers.create_user("fan_#2", "pw", 99)
    password = hash_password("fan")
    with database.atomic():
        kept = followers.create_user("made_in_the_same_transaction", "pw", 1)
        assert User.add_followers(author.id, "fan", 0, 5, password) == 4
    assert User.get_by_id(kept.id).login == "made_in_the_same_transaction"
    assert [u.login for u in author.followers()] == ["fan_#0", "fan_#1", "fan_#3", "fan_#4"]
    assert FollowerCount.of_user(author.id) == 4


def test_zero_followers(author):
    assert followers.add_followers_now(author, "fan", 0) == (0, 0)


def test_timestamps_are_set_on_insert_and_on_update(author):
    before = User.get_by_id(author.id)
    assert before.created_at is not None and before.updated_at is not None
    time.sleep(0.01)
    User.update(age=41).where(User.id == author.id).execute()
    after = User.get_by_id(author.id)
    assert after.updated_at > before.updated_at and after.created_at == before.created_at
    followers.add_followers_now(author, "fan", 1)
    subscription = Subscription.get(Subscription.author == author)
    assert subscription.created_at is not None and subscription.updated_at is not None


def test_every_model_update_stamps_updated_at_unless_it_sets_it(author):
    def stamp():
        return User.get_by_id(author.id).updated_at

    before = stamp()
    time.sleep(0.01)
    User.update({User.age: 42}).where(User.id == author.id).execute()  # fields as keys
    assert stamp() > before
    fixed = before - datetime.timedelta(days=1)
    User.update(age=43, updated_at=fixed).where(User.id == author.id).execute()
    assert stamp() == fixed
    User.update({"updated_at": before}).where(User.id == author.id).execute()  # names as keys
    assert stamp() == before


def test_create_user_refuses_a_taken_login(author):
    with pytest.raises(followers.Conflict):
        followers.create_user("author", "x", 1)


def test_subscribe_rules(author):
    fan = followers.create_user("fan", "pw", 20)
    assert followers.subscribe(author.id, fan.id).author_id == author.id
    with pytest.raises(followers.Conflict):
        followers.subscribe(author.id, fan.id)
    with pytest.raises(followers.NotFound):
        followers.subscribe(author.id, 999_999)
    with pytest.raises(ValueError):
        followers.subscribe(author.id, author.id)


def test_a_large_sync_request_is_built_in_parallel_statements(author, monkeypatch):
    import settings

    monkeypatch.setattr(settings, "SYNC_STATEMENT_ROWS", 3)
    assert followers.add_followers_now(author, "many", 10) == (10, 0)  # 4 statements on 2 connections
    assert [u.login for u in author.followers().order_by(User.age)] == [f"many_#{i}" for i in range(10)]
    assert followers.add_followers_now(author, "many", 11) == (1, 10)
