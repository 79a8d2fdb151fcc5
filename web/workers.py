"""``GET /api/v1/workers``: each worker process from its heartbeats."""

from db import WorkerProcess

#: Processes silent for longer than this are not listed.
LISTED_FOR_S = 3600


def workers():
    return [
        {
            "id": row["id"],
            "host": row["host"],
            "pid": row["pid"],
            "threads": row["threads"],
            "busy": row["busy"],
            "unitsDone": row["units_done"],
            "state": row["state"],
            "startedAt": row["created_at"].isoformat(),
            "lastHeartbeat": row["updated_at"].isoformat(),
            "silentSeconds": round(row["silent_s"], 1),
            "heartbeatIntervalSeconds": row["interval_s"],
        }
        for row in WorkerProcess.recent(LISTED_FOR_S)
    ]


class WorkersResource:
    def on_get(self, req, resp):
        resp.media = {"items": workers()}
