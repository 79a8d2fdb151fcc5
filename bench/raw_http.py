"""A bare HTTP/1.1 load generator for the API: pre-built requests, kept-alive
connections, one thread.

The load must cost the 2 cores as little as possible, since the API shares
them with it: with ``requests`` (~1 ms of CPU a request) the client, not the
API, set the pace. Here one thread waits on every connection at once (a
selector, as wrk does), at ~50 us of CPU a request, with no client threads
taking turns at a GIL.

Connections are kept alive because that is how the API is served: nginx
keeps its connections to gunicorn open (``keepalive`` in the upstream block
of deploy/nginx.conf.template), as the publish baseline keeps its AMQP
connection. A new connection per request cost the API about a third of its
requests/s on 2 cores (accept, close and the TCP handshake on both sides;
docs/benchmark.md).
"""

import json
import selectors
import socket
import time


def json_post(url, path, payload):
    """The bytes of a POST of ``payload`` as JSON, to send any number of times."""
    host = url.removeprefix("http://")
    body = json.dumps(payload).encode()
    head = (
        f"POST {path} HTTP/1.1\r\nHost: {host}\r\nContent-Type: application/json\r\n"
        f"Content-Length: {len(body)}\r\n\r\n"
    )
    return head.encode() + body


class Answer:
    """One answer: its status, body and latency (from the request's first
    byte sent to the answer's last byte read)."""

    __slots__ = ("status", "body", "ms")

    def __init__(self, status, body, ms):
        self.status, self.body, self.ms = status, body, ms


def closed_loop(url, requests, *, connections, seconds=None):
    """Send ``requests`` (an iterable of bytes) over ``connections``
    kept-alive connections, each sending the next request as soon as the
    answer to its last one is whole, until the requests run out or
    ``seconds`` have passed. Returns every Answer, in the order they came."""
    host, port = url.removeprefix("http://").split(":")
    address = (host, int(port))
    requests = iter(requests)
    deadline = None if seconds is None else time.perf_counter() + seconds
    selector = selectors.DefaultSelector()
    answers = []

    def send_next(conn):
        request = next(requests, None)
        if request is None or (deadline is not None and time.perf_counter() >= deadline):
            selector.unregister(conn.sock)
            conn.sock.close()
            return
        if conn.closing:  # the server said Connection: close
            selector.unregister(conn.sock)
            conn.sock.close()
            conn.open(address)
            selector.register(conn.sock, selectors.EVENT_READ, conn)
        conn.send(request)

    for _ in range(connections):
        conn = _Connection()
        conn.open(address)
        selector.register(conn.sock, selectors.EVENT_READ, conn)
        send_next(conn)
    try:
        while selector.get_map():
            events = selector.select(timeout=30)
            if not events:
                raise TimeoutError("the API answered nothing for 30 s")
            for key, _ in events:
                conn = key.data
                answer = conn.receive()
                if answer is not None:
                    answers.append(answer)
                    send_next(conn)
    finally:
        for key in list(selector.get_map().values()):
            key.fileobj.close()
        selector.close()
    return answers


class _Connection:
    def open(self, address):
        self.sock = socket.create_connection(address, timeout=30)
        self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.buffer = b""
        self.closing = False

    def send(self, request):
        self.sent_at = time.perf_counter()
        self.sock.sendall(request)

    def receive(self):
        """Read what came; the Answer once it is whole, else None."""
        data = self.sock.recv(65536)
        if not data:
            raise ConnectionError(f"the API closed a connection after {len(self.buffer)} bytes of an answer")
        self.buffer += data
        head_end = self.buffer.find(b"\r\n\r\n")
        if head_end < 0:
            return None
        head = self.buffer[:head_end].lower()
        length = 0
        for line in head.split(b"\r\n")[1:]:
            name, _, value = line.partition(b":")
            if name == b"content-length":
                length = int(value)
            elif name == b"connection" and value.strip() == b"close":
                self.closing = True
        end = head_end + 4 + length
        if len(self.buffer) < end:
            return None
        body, self.buffer = self.buffer[head_end + 4:end], self.buffer[end:]
        return Answer(int(head.split(b" ", 2)[1]), body, (time.perf_counter() - self.sent_at) * 1000)
