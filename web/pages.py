"""Server-rendered HTML for the console: Jinja2 templates (web/templates/),
escaped by default, served with a Content-Security-Policy that lets a page
load nothing but this server's own script and style sheet (web/static/)."""

from pathlib import Path

import falcon
import jinja2

HERE = Path(__file__).resolve().parent
STATIC_DIR = HERE / "static"

TEMPLATES = jinja2.Environment(
    loader=jinja2.FileSystemLoader(HERE / "templates"),
    autoescape=True,  # every value a user or a message chose (logins, reasons) is text, never markup
    undefined=jinja2.StrictUndefined,
    trim_blocks=True,
    lstrip_blocks=True,
)

#: No inline script or style, nothing from elsewhere, no framing: live
#: updates come from /console/static/console.js reading this server's API.
CONTENT_SECURITY_POLICY = (
    "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; connect-src 'self'; "
    "form-action 'self'; frame-ancestors 'none'; base-uri 'none'"
)


def render(req, resp, template, *, status=falcon.HTTP_200, **context):
    resp.status = status
    resp.content_type = falcon.MEDIA_HTML
    resp.set_header("Content-Security-Policy", CONTENT_SECURITY_POLICY)
    resp.set_header("Cache-Control", "no-store")
    resp.set_header("X-Content-Type-Options", "nosniff")
    resp.set_header("Referrer-Policy", "same-origin")
    resp.text = TEMPLATES.get_template(template).render(
        csrf=req.context.get("csrf", ""), logged_in=req.context.get("logged_in", False), path=req.path, **context
    )
