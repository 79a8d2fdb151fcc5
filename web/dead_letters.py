"""Dead letters: ``GET /api/v1/dead-letters``, ``POST
/api/v1/dead-letters/{id}/replay``, ``DELETE /api/v1/dead-letters/{id}``.

The list is what the workers recorded in PostgreSQL (reason, attempts, job,
unit); replay and purge act on the message in RabbitMQ through
``ops.dead_letters``, as ``python -m ops dlq`` does. A message in the
dead-letter queue that no worker recorded (not even JSON) is only seen by
``python -m ops dlq list``.
"""

import followers
import validation
from db import DeadLetter
from ops import dead_letters

MESSAGE_ID_MAX = 64  # DeadLetter.message_id: a longer id cannot be recorded


def check_id(message_id):
    """NotFound for an id no dead letter can have: too long to be recorded,
    or with a NUL (which PostgreSQL cannot even compare: it was a 500)."""
    if len(message_id) > MESSAGE_ID_MAX or "\x00" in message_id:
        shown = message_id[:MESSAGE_ID_MAX].replace("\x00", "\\x00")
        raise followers.NotFound(f"no dead letter {shown} is recorded")


class DeadLettersResource:
    def on_get(self, req, resp):
        page = validation.validate(req.params, validation.PAGE)
        items, total = DeadLetter.page(limit=page["limit"], offset=page["offset"])
        resp.media = {"items": [item.to_dict() for item in items], "total": total}


class DeadLetterResource:
    token_required = ("DELETE",)

    def on_delete(self, req, resp, message_id):
        check_id(message_id)
        dead_letters.purge_one(message_id)
        resp.media = {"success": True, "messageId": message_id, "action": "purged"}


class DeadLetterReplayResource:
    token_required = ("POST",)

    def on_post(self, req, resp, message_id):
        check_id(message_id)
        dead_letters.replay_one(message_id)
        resp.media = {"success": True, "messageId": message_id, "action": "replayed"}
