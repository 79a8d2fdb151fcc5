"""What the workers record about messages, as opposed to what they do.

Each table is written off the happy path only: a redelivery, a dead letter,
or the lab's event log (written by the lab's workers only).
"""

from peewee import AutoField, CharField, IntegerField, TextField, fn

from .models import BaseModel, TimestampTZField


class DeliveryAttempt(BaseModel):
    """Starts of a message that RabbitMQ redelivered (after a worker crash,
    a kill by the hard time limit, a lost connection). Kept in PostgreSQL, so
    a crash cannot reset the count as it resets Dramatiq's in-message one.
    A first delivery writes nothing: counting must not tax the happy path."""

    message_id = CharField(max_length=64, primary_key=True)
    starts = IntegerField()
    last_error = TextField(null=True)

    class Meta:
        table_name = "delivery_attempts"

    @classmethod
    def count_redelivery(cls, message_id):
        """Record a start of a redelivered message, in one statement; returns
        (starts so far, this one included: the unrecorded first is 1, and
        why its worker was last killed, if the watchdog said)."""
        query = (
            cls.insert(message_id=message_id, starts=2)
            .on_conflict(
                conflict_target=[cls.message_id],
                update={cls.starts: cls.starts + 1, cls.updated_at: fn.now()},
            )
            .returning(cls.starts, cls.last_error)
        )
        row = list(query.execute())[0]
        return row.starts, row.last_error

    @classmethod
    def note_kill(cls, message_id, reason):
        """The worker is about to kill itself over this message: keep why."""
        (
            cls.insert(message_id=message_id, starts=1, last_error=reason)
            .on_conflict(
                conflict_target=[cls.message_id],
                update={cls.last_error: reason, cls.updated_at: fn.now()},
            )
            .execute()
        )


class DeadLetter(BaseModel):
    """Why a message went to the dead-letter queue; the message itself stays
    in RabbitMQ (``<queue>.XQ``), where ``ops.dead_letters`` finds it.
    ``created_at`` is when it was first dead-lettered, ``updated_at`` the
    last time (a replay that fails again)."""

    message_id = CharField(max_length=64, primary_key=True)
    queue_name = CharField(max_length=255)
    actor_name = CharField(max_length=255)
    reason = TextField()
    attempts = IntegerField()
    job_id = IntegerField(null=True)  # a unit of work's job and unit, when it is one
    unit = IntegerField(null=True)

    class Meta:
        table_name = "dead_letters"

    @classmethod
    def record(cls, message_id, queue_name, actor_name, reason, attempts, *, job_id=None, unit=None):
        (
            cls.insert(
                message_id=message_id,
                queue_name=queue_name,
                actor_name=actor_name,
                reason=reason,
                attempts=attempts,
                job_id=job_id,
                unit=unit,
            )
            .on_conflict(
                conflict_target=[cls.message_id],
                update={cls.reason: reason, cls.attempts: attempts, cls.updated_at: fn.now()},
            )
            .execute()
        )

    @classmethod
    def page(cls, *, limit, offset):
        """The latest dead letters first, and how many there are."""
        query = cls.select().order_by(cls.updated_at.desc(), cls.message_id)
        return list(query.limit(limit).offset(offset)), query.count()

    @classmethod
    def forget(cls, message_id):
        """Delete the record of a dead letter; returns it as it was, or None
        if there was none (forgotten already: once, whoever asks twice)."""
        rows = list(cls.delete().where(cls.message_id == message_id).returning(cls).execute())
        return rows[0] if rows else None

    @classmethod
    def count_for(cls, queue_name):
        """Dead letters recorded for a work queue (its delay queue's included)."""
        return cls.select().where(cls.queue_name.in_([queue_name, f"{queue_name}.DQ"])).count()

    def to_dict(self):
        return {
            "messageId": self.message_id,
            "queueName": self.queue_name,
            "actorName": self.actor_name,
            "reason": self.reason,
            "attempts": self.attempts,
            "jobId": self.job_id,
            "unit": self.unit,
            "firstSeen": self.created_at.isoformat(),
            "lastSeen": self.updated_at.isoformat(),
        }


class MessageEvent(BaseModel):
    """One processing of one message by one worker thread (the lab's record).
    A row left ``running`` is a delivery whose worker died under it."""

    id = AutoField()  # as Peewee would add it, written out for type checkers

    message_id = CharField(max_length=64, index=True)
    actor_name = CharField(max_length=255)
    job_id = IntegerField(null=True)
    unit = IntegerField(null=True)
    user_id = IntegerField(null=True)
    pid = IntegerField()
    thread = CharField(max_length=64)
    redelivered = IntegerField(default=0)
    started = TimestampTZField()
    ended = TimestampTZField(null=True)
    outcome = CharField(max_length=32, default="running")
    error = TextField(null=True)

    class Meta:
        table_name = "message_events"

    @classmethod
    def of_job(cls, job_id, limit=1000):
        """The recorded deliveries of a job's messages, in start order."""
        return list(cls.select().where(cls.job_id == job_id).order_by(cls.started, cls.id).limit(limit))


MESSAGE_MODELS = [DeliveryAttempt, DeadLetter, MessageEvent]
