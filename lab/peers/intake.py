"""A peer's intake, the producer side of the implementation:
``python -m lab.peers.intake dramatiq|celery`` reads requests, one JSON
object a line on stdin, and answers each with a line on stdout.

  {"user": "author", "followers": "k3", "count": 3}
  -> {"userId": 1, "units": [[0, 3]], "refused": null}

It makes the user the first time it is named (unless there is one), cuts the request into units
of FOLLOWERS_PER_MESSAGE followers (1 is the original's §7, a message per
follower), and publishes them the obvious way for the peer (``actor.send``,
``task.delay``). A publish that raises refuses the request, as an API would
answer 5xx: ``refused`` says why and ``units`` holds what did go out.

``FAULT_API_KILL_PERCENT`` (the intake row: our API SIGKILLed between its
commit and its publish) kills a request this often where a peer's intake
can be killed: between two of its publishes, the request half sent and
the client told nothing. The runner then starts another intake, as a
supervisor would.

The lab drives it straight from the runner, without HTTP: our API is not
part of a peer. It runs in a process of its own because the peers' modules
read settings (the queue, the faults) at import, from the stack's environment.
"""

import importlib
import json
import os
import random
import signal
import sys

import settings
from db import User, database
from passwords import hash_password

PEERS = {"dramatiq": "lab.peers.bare_dramatiq", "celery": "lab.peers.celery_app"}


def units_of(count, per_message):
    return [[first, min(per_message, count - first)] for first in range(0, count, per_message)]


def main(argv):
    peer = importlib.import_module(PEERS[argv[1]])
    users = {}
    for line in sys.stdin:
        request = json.loads(line)
        if request["user"] not in users:
            with database.connection_context():  # made by an earlier intake, if one was killed
                user = User.get_or_none(User.login == request["user"]) or User.create(
                    login=request["user"], password=hash_password("pw"), age=30, is_active=True)
                users[request["user"]] = user.id
        user_id = users[request["user"]]
        sent, refused = [], None
        units = units_of(request["count"], max(1, settings.FOLLOWERS_PER_MESSAGE))
        killed_after = None
        if len(units) > 1 and random.randrange(100) < settings.FAULT_API_KILL_PERCENT:
            killed_after = random.randrange(1, len(units))  # some units out, not all
        for unit in units:
            if len(sent) == killed_after:
                print(f"injected kill: {len(sent)} of {len(units)} units published", file=sys.stderr, flush=True)
                os.kill(os.getpid(), signal.SIGKILL)
            try:
                peer.publish(user_id, request["followers"], [unit])
            except Exception as error:  # noqa: BLE001  (whatever the client library raises when the broker fails it)
                refused = f"{type(error).__name__}: {error}"
                break
            sent.append(unit)
        print(json.dumps({"userId": user_id, "units": sent, "refused": refused}), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
