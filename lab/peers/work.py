"""The unit of work every peer runs: the original's consumer, written the
obvious way on our models. For each follower i in [first, first + count):
create the user ``{followers_login}_#{i}`` (password = followers_login,
age i, active) and subscribe it to the user, as the original's
``SubscriptionService::addFollowers`` did, a row at a time.

One transaction per message (the obvious Peewee way), so a unit is all or
nothing; nothing makes it idempotent: a delivery that runs again meets the
unique login, as the original's §4 did.
"""

from db import Subscription, User, database
from passwords import hash_password

from . import faults


def add_followers(user_id, followers_login, count, first, *, attempt, first_delivery):
    """Run one unit with the lab's faults around it. Returns how many
    followers it created."""
    faults.before_effect(followers_login, first, count, attempt)
    password = hash_password(followers_login)  # one hash per message: every follower has the same password
    with database.connection_context(), database.atomic():
        for i in range(first, first + count):
            follower = User.create(login=f"{followers_login}_#{i}", password=password, age=i, is_active=True)
            Subscription.create(author=user_id, follower=follower)
    faults.after_commit(followers_login, first, first_delivery)
    return count
