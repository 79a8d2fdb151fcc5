"""The level of our own loggers in a worker process, set when it boots."""

import logging

from dramatiq.middleware import Middleware


class LogLevel(Middleware):
    """Middleware that sets the level of our own loggers (``followers.*``)
    when a worker process boots; Dramatiq's own loggers follow its ``-v``
    flags. Set here, not when ``actors`` is imported, so that importing it
    (the API does, to publish; so do the tests and the lab) changes nothing
    in the importer's logging.

    Parameters:
      level(str): A level name, such as ``INFO`` or ``WARNING``.
    """

    def __init__(self, *, level):
        self.level = level

    def after_process_boot(self, broker):
        logging.getLogger("followers").setLevel(self.level)
