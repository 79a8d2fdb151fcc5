"""A batch of messages that counts once RabbitMQ confirms every one of them:
publisher confirms, not AMQP transactions.

Measured on RabbitMQ 3.10.8 with the lab's three-node cluster: a channel on
a node whose quorum queue had just lost its leader answered ``tx.commit-ok``
for every batch, and the queue never held those messages (``python -m lab
publish-probe``: 274 of 365 committed messages lost; 56-60 units of 14-15
jobs in each failed ``lab cluster`` run). The same publishes in confirm
mode were nacked, and none acked was lost. A confirm settles each message, so a
refusal is seen, and the batch is sent again instead of being deleted from
the outbox as sent.

Waiting for one confirm per message costs a round trip per message (what
caps Dramatiq's ``confirm_delivery`` near 800 messages/s), so a batch goes
out without waiting and ``wait`` returns once every message is settled.

A batch also goes out in one write. pika writes every frame of a message
(method, header, body) with a ``send`` of its own: three system calls a
message for the publisher, three TCP segments for RabbitMQ to read
(docs/benchmark.md: what the intake gained).
"""

import time

import pika
from pika.exceptions import AMQPError


class NotConfirmed(AMQPError):
    """RabbitMQ nacked messages of the batch, or did not settle them in time:
    they must be sent again (on a new channel: this one's state is unknown)."""

    def __str__(self):
        return self.args[0]

    def __repr__(self):
        return f"NotConfirmed({self.args[0]!r})"


def _nothing():
    pass


class ConfirmedChannel:
    """A pika ``BlockingChannel`` in confirm mode, published to in batches.

    pika's blocking channel waits for each message's confirm and has no
    public call to do otherwise, so this is the one place that reaches into
    its ``_impl`` (the asynchronous channel it wraps) to publish without
    waiting and count the confirms, and into its connection's
    ``_adapter_emit_data`` (where pika hands marshaled frames to the socket)
    to send a batch in one write. tests/test_confirms.py fails if pika
    changes either.

    Parameters:
      channel(BlockingChannel): A channel of its own, put in confirm mode here.
      timeout(float): Seconds ``wait`` gives RabbitMQ to settle a batch.
    """

    def __init__(self, channel, *, timeout):
        self.channel = channel
        self.timeout = timeout
        self.published = 0  # delivery tags number the channel's messages from 1
        self.settled_below = 1  # every tag below this one is settled
        self.unsettled = set()
        self.nacked = 0
        self.outgoing = []  # the batch's frames, marshaled by pika, not sent yet
        selected = []

        def on_selected(frame):
            selected.append(frame)
            self._wake()

        channel._impl.confirm_delivery(ack_nack_callback=self._on_confirm, callback=on_selected)
        self._until(lambda: selected, "confirm mode")

    def publish(self, routing_key, body, properties):
        """Add a message to the batch, without waiting for anything: pika
        checks and marshals it, ``wait`` sends it."""
        connection = self.channel._impl.connection
        connection._adapter_emit_data = self.outgoing.append
        try:
            self.channel._impl.basic_publish(exchange="", routing_key=routing_key, body=body, properties=properties)
        finally:
            del connection._adapter_emit_data  # pika's own method again
        self.published += 1
        self.unsettled.add(self.published)

    def wait(self):
        """Send the batch, in one write, and return once RabbitMQ has acked
        every message published so far. Raises NotConfirmed if it nacked
        any, or settled them too slowly."""
        if self.outgoing:
            frames, self.outgoing = b"".join(self.outgoing), []
            self.channel._impl.connection._adapter_emit_data(frames)
        self._until(lambda: not self.unsettled, "the batch")
        nacked, self.nacked = self.nacked, 0
        if nacked:
            raise NotConfirmed(f"RabbitMQ refused {nacked} messages of the batch (nack)")

    def _on_confirm(self, frame):
        method = frame.method
        if method.multiple:  # every tag up to this one
            tags = range(self.settled_below, method.delivery_tag + 1)
            self.settled_below = max(self.settled_below, method.delivery_tag + 1)
        else:
            tags = (method.delivery_tag,)
        for tag in tags:
            if tag in self.unsettled:
                self.unsettled.discard(tag)
                if isinstance(method, pika.spec.Basic.Nack):
                    self.nacked += 1
        if not self.unsettled:
            self._wake()

    def _wake(self):
        # process_data_events returns early once a callback is ready to run.
        self.channel.connection.add_callback_threadsafe(_nothing)

    def _until(self, done, what):
        deadline = time.monotonic() + self.timeout
        while not done():
            if self.channel.is_closed:  # by the broker: nothing more will be confirmed on it
                raise NotConfirmed(f"RabbitMQ closed the channel before it confirmed {what}")
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise NotConfirmed(f"RabbitMQ did not confirm {what} within {self.timeout:g} s")
            self.channel.connection.process_data_events(time_limit=remaining)
