"""Reading a user's followers at any depth, against the real PostgreSQL:
pages by cursor and by offset, and the follower count that gives ``total``
(kept by the statements that subscribe, never counted per page)."""

import psycopg2
import pytest
from peewee import OperationalError

import followers
import jobs
import settings
from db import FollowerCount, Subscription, database, schema
from db.database import connect_params
from db.models import FOLLOWERS_PAGE_SQL, followers_ctes


def truth(author):
    """What the unique subscription index says: the count to match."""
    return Subscription.select().where(Subscription.author == author).count()


def total(author):
    return FollowerCount.of_user(author.id)


def walk(author, limit):
    """Every page by cursor: (logins, [total of each page])."""
    logins, totals, cursor = [], [], 0
    while True:
        page, page_total, cursor = followers.followers_page(author.id, limit=limit, cursor=cursor)
        logins += [user.login for user in page]
        totals.append(page_total)
        if cursor is None:
            return logins, totals
        assert len(page) == limit  # only the last page is short


def test_cursor_pages_give_every_follower_once_in_subscription_order(author, monkeypatch):
    monkeypatch.setattr(settings, "SYNC_STATEMENT_ROWS", 4)  # several statements, two at once
    early = followers.create_user("early", "pw", 1)  # an older user, subscribed last
    followers.add_followers_now(author, "fan", 20)
    followers.subscribe(author.id, early.id)
    expected = [user.login for user in author.followers()]
    assert expected[-1] == "early" and len(expected) == 21
    for limit in (1, 6, 7, 21, 1000):
        logins, totals = walk(author, limit)
        assert logins == expected, limit
        assert set(totals) == {21}


def test_the_last_full_page_has_no_next(author):
    followers.add_followers_now(author, "fan", 4)
    page, _, cursor = followers.followers_page(author.id, limit=4)
    assert len(page) == 4 and cursor is None
    assert followers.followers_page(author.id, limit=3)[2] == page[2].subscription_id


def test_offset_still_works_and_counts_from_the_cursor(author):
    followers.add_followers_now(author, "fan", 10)
    page, page_total, cursor = followers.followers_page(author.id, limit=3, offset=5)
    assert [user.login for user in page] == ["fan_#5", "fan_#6", "fan_#7"] and page_total == 10
    after, _, _ = followers.followers_page(author.id, limit=2, cursor=cursor)
    assert [user.login for user in after] == ["fan_#8", "fan_#9"]
    both, _, last = followers.followers_page(author.id, limit=5, cursor=page[0].subscription_id, offset=3)
    assert [user.login for user in both] == ["fan_#9"] and last is None
    assert followers.followers_page(author.id, limit=5, offset=10)[0] == []


def plan_nodes(plan):
    yield plan
    for child in plan.get("Plans", []):
        yield from plan_nodes(child)


def test_a_page_reads_its_own_rows_whatever_other_authors_added_since(author):
    """Another author's subscriptions, added since the last ANALYZE, follow
    the author's in id order. The last page must still be read from the
    (author_id, id) index, from the cursor on, and only it: for ``author_id
    = %s AND id > %s`` PostgreSQL 15 scanned the primary key from the cursor
    through every one of the other's rows, to learn that no row follows."""
    followers.add_followers_now(author, "fan", 2000)
    database.execute_sql("ANALYZE users, subscriptions")
    other = followers.create_user("other", "pw", 1)  # a higher id than the author's
    followers.add_followers_now(other, "crowd", 2000)

    _, _, cursor = followers.followers_page(author.id, limit=1900)
    page, _, last = followers.followers_page(author.id, limit=100, cursor=cursor)
    assert [user.login for user in page] == [f"fan_#{i}" for i in range(1900, 2000)] and last is None
    (explained,) = database.execute_sql(f"EXPLAIN (ANALYZE, FORMAT JSON) {FOLLOWERS_PAGE_SQL}",
                                        (author.id, cursor, author.id, 0, 101)).fetchone()
    nodes = list(plan_nodes(explained[0]["Plan"]))
    page_scan = next((node for node in nodes if "author_id" in node.get("Index Cond", "")), None)
    assert page_scan is not None and page_scan["Index Name"] == "subscriptions_author_id_id", nodes
    assert page_scan["Actual Rows"] == 100, nodes
    assert not any(node.get("Rows Removed by Filter") for node in nodes), nodes
    # Neither author's pages hold the other's followers (the row comparison has two bounds).
    assert walk(author, 700)[0] == [f"fan_#{i}" for i in range(2000)]
    assert walk(other, 700)[0] == [f"crowd_#{i}" for i in range(2000)]


def test_a_user_without_followers_and_an_unknown_user(author):
    assert followers.followers_page(author.id, limit=10) == ([], 0, None)
    with pytest.raises(followers.NotFound):
        followers.followers_page(999_999, limit=10)


def test_total_is_exact_after_every_way_of_adding_followers(author, monkeypatch):
    monkeypatch.setattr(settings, "SYNC_STATEMENT_ROWS", 3)
    followers.add_followers_now(author, "sync", 10)  # 4 statements on 2 connections
    assert total(author) == truth(author) == 10
    followers.add_followers_now(author, "sync", 12)  # 10 skipped, 2 made
    assert total(author) == truth(author) == 12
    job = jobs.create_job(author.id, "unit", 7, unit_size=3)
    for unit in range(job.units):
        jobs.apply_unit(job.id, unit)
    assert total(author) == truth(author) == 19
    assert jobs.apply_unit(job.id, 1).created is None  # a redelivered unit
    assert total(author) == truth(author) == 19
    fan = followers.create_user("fan", "pw", 3)
    followers.subscribe(author.id, fan.id)
    with pytest.raises(followers.Conflict):
        followers.subscribe(author.id, fan.id)  # refused: counts nothing
    assert total(author) == truth(author) == 20
    other = followers.create_user("other", "pw", 3)
    followers.add_followers_now(other, "sync", 15)  # logins taken: 12 skipped, 3 made for other
    assert (total(other), total(author)) == (3, 20)
    assert FollowerCount.select().where(FollowerCount.author == author.id).count() <= FollowerCount.SHARDS


def _hold_a_unit_open(author_id):
    """Another connection adds a follower to the author and holds its
    transaction open (its counter row locked) until the caller commits."""
    conn = psycopg2.connect(**connect_params())
    with conn.cursor() as cursor:
        cursor.execute(
            f"WITH {followers_ctes(password='%(password)s')} SELECT count(*) FROM subscribed",
            {"prefix": "held_#", "password": "x", "start": 0, "stop": 1, "author": author_id},
        )
        assert cursor.fetchone()[0] == 1
    return conn


def test_units_of_one_author_do_not_wait_for_each_other(author):
    held = _hold_a_unit_open(author.id)
    try:
        added = waited = 0
        for i in range(20):
            try:
                with database.atomic():
                    database.execute_sql("SET LOCAL lock_timeout = '200ms'")
                    added += followers.User.add_followers(author.id, f"busy{i}", 0, 1, "x")
            except OperationalError as error:
                assert "lock timeout" in str(error)
                waited += 1
        # One counter row would make all 20 wait for the open transaction;
        # with FollowerCount.SHARDS rows, about 1 in SHARDS does.
        assert added >= 12, f"{waited} of 20 statements waited for another unit's counter row"
        held.commit()
    finally:
        held.close()
    assert total(author) == truth(author) == added + 1


def test_the_upgrade_counts_the_followers_made_before_counts_existed(author):
    followers.add_followers_now(author, "old", 6)
    other = followers.create_user("other", "pw", 3)
    followers.subscribe(other.id, author.id)
    FollowerCount.delete().execute()  # a database from before follower counts
    schema.create_schema()
    assert (total(author), total(other)) == (6, 1)
    schema.create_schema()  # run again: nothing counted twice
    assert (total(author), total(other)) == (6, 1)
    assert FollowerCount.select().count() == 2
