"""gunicorn's settings, read by ``gunicorn api:app`` from this folder."""

import settings

bind = settings.API_BIND
workers = settings.API_WORKERS
# No preload: each worker imports the app itself, so no database or broker
# connection is ever shared across a fork.
preload_app = False
# The synchronous path may add 100,000 followers in one request.
timeout = 120
