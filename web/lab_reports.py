"""The console's Lab page: the lab's HTML reports found on this machine, the
peers' matrix (``python -m lab compare``) first, each served as it was
written. A report is the lab's own file, read-only here; only these names
are served, never a path from the URL."""

import datetime
from pathlib import Path

import falcon

from .pages import render

#: name -> (what it is, the command that writes it)
REPORTS = {
    "compare.html": ("The peers compared: bare Dramatiq, Celery and ours, scenario by scenario",
                     "python -m lab compare"),
    "latest.html": ("The last lab run: every scenario, naive and robust, with timelines", "python -m lab all"),
}

#: A report is one file with its style inline and no script: it may style
#: itself, and load nothing.
REPORT_POLICY = "default-src 'none'; style-src 'unsafe-inline'; img-src data:; frame-ancestors 'none'; base-uri 'none'"


def found(folder):
    """[(name, description, command, modified or None)] of every report."""
    rows = []
    for name, (description, command) in REPORTS.items():
        path = Path(folder) / name
        modified = None
        if path.is_file():
            modified = datetime.datetime.fromtimestamp(path.stat().st_mtime, datetime.UTC)
        rows.append((name, description, command, modified))
    return rows


class LabPage:
    console = True

    def __init__(self, folder):
        self.folder = folder

    def on_get(self, req, resp):
        render(req, resp, "lab.html", reports=found(self.folder), folder=str(self.folder))


class LabReport:
    console = True

    def __init__(self, folder):
        self.folder = folder

    def on_get(self, req, resp, name):
        if name not in REPORTS:  # never a path from the URL
            render(req, resp, "missing.html", status=falcon.HTTP_404, what=f"No lab report is called {name}")
            return
        path = Path(self.folder) / name
        if not path.is_file():
            render(req, resp, "missing.html", status=falcon.HTTP_404,
                   what=f"No {name} on this machine yet: {REPORTS[name][1]} writes it")
            return
        resp.content_type = falcon.MEDIA_HTML
        resp.set_header("Content-Security-Policy", REPORT_POLICY)
        resp.set_header("Cache-Control", "no-store")
        resp.set_header("X-Content-Type-Options", "nosniff")
        resp.data = path.read_bytes()
