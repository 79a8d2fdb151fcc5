"""The domain against the real PostgreSQL: what a user would count in the
database after each call."""

import datetime
import time

import pytest

import followers
from db import Job, JobUnit, Subscription, User
from passwords import verify_password


@pytest.fixture
def author(db):
    return followers.create_user("author", "pw", 40)


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


def test_existing_login_is_skipped_and_not_subscribed(author):
    other = followers.create_user("other", "pw", 1)
    taken = followers.create_user("fan_#3", "pw", 99)
    followers.add_followers_now(other, "fan", 5)  # other gets fan_#0..4 except #3
    assert followers.add_followers_now(author, "fan", 6) == (1, 5)
    assert [u.login for u in author.followers()] == ["fan_#5"]
    assert User.get_by_id(taken.id).age == 99


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


def _unit(job, chunk):
    start, stop = job.chunk_bounds(chunk)
    return dict(job_id=job.id, chunk=chunk, user_id=job.user_id, followers_login=job.followers_login,
                start=start, count=stop - start, ordered=job.ordered)


def test_job_is_split_into_chunks(author):
    job = followers.create_job(author.id, "fan", 10, chunk_size=4)
    assert job.messages == 3
    assert [job.chunk_bounds(c) for c in range(3)] == [(0, 4), (4, 8), (8, 10)]


def test_a_unit_applied_twice_commits_once(author):
    job = followers.create_job(author.id, "fan", 10, chunk_size=4)
    assert followers.apply_unit(**_unit(job, 1)) == (4, 0, None)
    assert followers.apply_unit(**_unit(job, 1)) == (None, None, None)
    assert Subscription.select().where(Subscription.author == author).count() == 4
    assert JobUnit.get(job=job.id, chunk=1).created == 4


def test_job_progress_goes_from_queued_to_done(author):
    job = followers.create_job(author.id, "fan", 10, chunk_size=4)
    assert job.to_dict()["status"] == "queued"
    followers.apply_unit(**_unit(job, 0))
    state = job.to_dict()
    assert (state["status"], state["messages"]["done"], state["created"]) == ("running", 1, 4)
    followers.apply_unit(**_unit(job, 2))
    followers.apply_unit(**_unit(job, 1))
    state = Job.get_by_id(job.id).to_dict()
    assert (state["status"], state["created"], state["skipped"]) == ("done", 10, 0)


def test_a_dead_lettered_unit_fails_the_job_and_a_replay_mends_it(author):
    job = followers.create_job(author.id, "fan", 4, chunk_size=2)
    followers.apply_unit(**_unit(job, 0))
    JobUnit.mark_failed(job.id, 1, "RuntimeError: boom")
    state = job.to_dict()
    assert state["status"] == "failed" and state["errors"] == ["unit 1: RuntimeError: boom"]
    JobUnit.mark_failed(job.id, 0, "late duplicate")  # never undoes a done unit
    assert followers.apply_unit(**_unit(job, 1)) == (2, 0, None)
    state = job.to_dict()
    assert (state["status"], state["created"], state["errors"]) == ("done", 4, [])


def test_a_unit_of_an_unknown_job_is_invalid(author):
    with pytest.raises(followers.InvalidUnit, match="job 12345 does not exist"):
        followers.apply_unit(job_id=12345, chunk=0, user_id=author.id, followers_login="x", start=0, count=1)


@pytest.mark.parametrize("change", [{"user_id": 999}, {"followers_login": "other"}, {"start": 1}, {"chunk": 5}])
def test_a_unit_that_does_not_match_its_job_is_invalid(author, change):
    job = followers.create_job(author.id, "fan", 4, chunk_size=2)
    with pytest.raises(followers.InvalidUnit):
        followers.apply_unit(**{**_unit(job, 0), **change})
    assert Subscription.select().count() == 0


def test_ordered_units_name_the_next_one(author):
    job = followers.create_job(author.id, "fan", 4, chunk_size=2, ordered=True)
    assert job.starts_now
    second = followers.create_job(author.id, "more", 2, chunk_size=2, ordered=True)
    assert not second.starts_now  # behind the first job
    _, _, following = followers.apply_unit(**_unit(job, 0))
    assert (following[0].id, following[1]) == (job.id, 1)
    _, _, following = followers.apply_unit(**_unit(job, 1))
    assert (following[0].id, following[1]) == (second.id, 0)  # the last unit starts the next job
    # A redelivered last unit names the same next unit again (publishing twice is harmless).
    assert followers.apply_unit(**_unit(job, 1))[2][0].id == second.id
    third = followers.create_job(author.id, "last", 2, chunk_size=2, ordered=True)
    assert not third.starts_now
    followers.apply_unit(**_unit(second, 0))
    assert followers.create_job(author.id, "free", 2, chunk_size=2, ordered=False).starts_now


def test_an_ordered_job_starts_now_when_the_previous_one_is_done(author):
    job = followers.create_job(author.id, "fan", 2, chunk_size=2, ordered=True)
    followers.apply_unit(**_unit(job, 0))
    assert followers.create_job(author.id, "next", 2, chunk_size=2, ordered=True).starts_now


def test_naive_apply_fails_on_redelivery_like_the_original(author):
    from peewee import IntegrityError

    job = followers.create_job(author.id, "fan", 3, chunk_size=3)
    assert followers.apply_unit_naively(**_unit(job, 0), after_commit=lambda: None) == (3, 0, None)
    with pytest.raises(IntegrityError):
        followers.apply_unit_naively(**_unit(job, 0), after_commit=lambda: None)


def test_a_large_sync_request_is_built_in_parallel_statements(author, monkeypatch):
    import settings

    monkeypatch.setattr(settings, "SYNC_STATEMENT_ROWS", 3)
    assert followers.add_followers_now(author, "many", 10) == (10, 0)  # 4 statements on 2 connections
    assert [u.login for u in author.followers().order_by(User.age)] == [f"many_#{i}" for i in range(10)]
    assert followers.add_followers_now(author, "many", 11) == (1, 10)
