"""Our own pika connections to a RabbitMQ cluster: ``RABBITMQ_URL`` may name
several nodes, separated by ``;`` (Dramatiq's own convention, which its
broker already accepts), and a connection goes to whichever node answers.

Each new connection starts with the node after the one the previous
connection of this process went to. A connection is only ever re-opened
after the last one failed (or on first use), so after a node dies the next
try goes to another node first instead of waiting on the dead one again,
and the threads of a process spread over the nodes as a side effect.
Dramatiq's broker and consumers, by contrast, always try the URLs in the
order given: they too reach a live node, the first one that answers.
"""

import itertools
import threading

import pika
from pika.adapters.utils.connection_workflow import AMQPConnectorException
from pika.exceptions import AMQPConnectionError

_turns = {}  # the URL setting -> an endless count: which node a new connection tries first
_lock = threading.Lock()


def node_urls(setting):
    """The URLs of a ``;``-separated setting, in order, blanks dropped."""
    urls = [url.strip() for url in setting.split(";") if url.strip()]
    if not urls:
        raise ValueError("RABBITMQ_URL names no RabbitMQ node")
    return urls


def node_parameters(setting, *, timeout=None):
    """One ``pika.URLParameters`` a node, each tried once per attempt;
    ``timeout`` (seconds) bounds the connection and a blocked publisher."""
    parameters = []
    for url in node_urls(setting):
        node = pika.URLParameters(url)
        node.connection_attempts = 1
        node.retry_delay = 0
        if timeout is not None:
            node.socket_timeout = timeout
            node.blocked_connection_timeout = timeout
            node.stack_timeout = timeout
        parameters.append(node)
    return parameters


def connect(setting, *, timeout=None):
    """A ``pika.BlockingConnection`` to the first node of ``setting`` that
    answers, starting with the node after the last one tried. Raises
    ``AMQPConnectionError`` (naming every node) when none answers."""
    parameters = node_parameters(setting, timeout=timeout)
    with _lock:
        first = next(_turns.setdefault(setting, itertools.count())) % len(parameters)
    order = parameters[first:] + parameters[:first]
    errors = []
    for node in order:
        try:
            return pika.BlockingConnection(node)
        # pika raises the second (AMQPConnectorStackTimeout) for a node that
        # takes the TCP connection and never finishes the AMQP handshake (a
        # hung RabbitMQ, another server on the port); it is no AMQPError.
        except (AMQPConnectionError, AMQPConnectorException) as error:
            errors.append(f"{node.host}:{node.port}: {error!r}")
    raise AMQPConnectionError(f"no RabbitMQ node answered ({'; '.join(errors)})")
