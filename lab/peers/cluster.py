"""A peer under `lab cluster`'s load (``lab compare --cluster``): its
supervised workers and its intake, given the three lab nodes' URLs, each
on the queues it is best documented with on a cluster.

- bare Dramatiq: classic queues, the only kind it declares (quorum support
  was declined upstream: dramatiq PRs #869, #871); its ``RabbitmqBroker``
  takes the ``;``-separated URLs and connects to the first that answers.
- Celery: quorum queues (``QUEUE_TYPE=quorum``: lab/peers/celery_app.py
  declares ``x-queue-type`` as Celery's docs show, and Celery then turns
  global QoS off itself); kombu takes the ``;``-separated URLs as failover
  alternates.

A request is taken when the intake answers it without a refusal: it is
then expected whole, each follower once.
"""

from lab.cluster_sides import CLUSTER_ENV, FOLLOWERS_PER_REQUEST, Side
from lab.scenarios import COMMON_ENV

from .observe import PeerObserver
from .runner import Intake, Peer, PeerStack

QUEUE_TYPES = {"dramatiq": "classic", "celery": "quorum"}
UNIT_SIZE = int(CLUSTER_ENV["FOLLOWERS_PER_MESSAGE"])


def side_name(key, label):
    """A peer's column in lab cluster's table: its label and its queues."""
    return f"{label} ({QUEUE_TYPES[key]})"


class PeerSide(Side):
    @classmethod
    def start(cls, cluster, peer):
        queue_type = QUEUE_TYPES[peer.name]
        stack = PeerStack(peer, f"cluster_{peer.name}", env={
            **COMMON_ENV, **CLUSTER_ENV, "RABBITMQ_URL": cluster.urls, "QUEUE_TYPE": queue_type,
        }, processes=2, threads=2, supervise=True, stop_timeout=3)
        stack.reset(fresh=False)
        stack.start()
        side = cls(side_name(peer.name, peer.label), stack, expect="SOLVED")
        side.intake = Intake(peer, stack)
        return side

    def submit(self, number):
        followers_login = f"pc{number}"
        try:
            answer = self.intake.send("cluster_user", followers_login, FOLLOWERS_PER_REQUEST)
        except RuntimeError as error:  # the intake hung or died: a request nobody answered
            return None, str(error)
        if answer is None:
            return None, "the intake was killed"
        if answer["refused"] is not None:
            return None, answer["refused"]
        return followers_login, None

    def progress(self, cursor, accepted):
        """(units done, 0, units in all) of the accepted requests. A peer
        keeps no record of its units: its followers are what it did, and a
        unit makes its followers in one transaction, all or none."""
        created = self._created_of(cursor, accepted)
        return created // UNIT_SIZE, 0, FOLLOWERS_PER_REQUEST // UNIT_SIZE * len(accepted)

    def _created_of(self, cursor, logins):
        cursor.execute(
            "SELECT count(*) FROM users f JOIN subscriptions s ON s.follower_id = f.id "
            "WHERE split_part(f.login, '_#', 1) = ANY(%s)",
            (list(logins),),
        )
        return cursor.fetchone()[0]

    def created(self, cursor):
        return self._created_of(cursor, self.accepted)

    def duplicated(self, cursor, created, expected):
        # A peer's unit run again meets the unique login: a failed delivery,
        # not a second follower.
        observer = PeerObserver(self.stack)
        try:
            return observer.unique_violations()
        finally:
            observer.close()

    def requests_done(self, cursor):
        cursor.execute(
            "SELECT split_part(f.login, '_#', 1), count(*) FROM users f JOIN subscriptions s ON s.follower_id = f.id "
            "WHERE split_part(f.login, '_#', 1) = ANY(%s) GROUP BY 1",
            (list(self.accepted),),
        )
        return sum(1 for _, count in cursor.fetchall() if count == FOLLOWERS_PER_REQUEST)

    def where_left(self, cursor):
        done = self.requests_done(cursor)
        return f"{len(self.accepted) - done} accepted requests not whole"

    def resent(self):
        return 0  # a peer's publish either returns or raises: a refusal, counted as such

    def stop(self):
        self.intake.close()
        super().stop()


def peer_sides(implementations):
    """Starters for lab.cluster.run_cluster, one a peer."""
    return [lambda cluster, implementation=implementation: PeerSide.start(
        cluster, Peer(implementation.key, implementation.label)) for implementation in implementations]
