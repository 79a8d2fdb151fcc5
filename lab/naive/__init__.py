"""The original lesson's consumer, for the lab's naive runs. Each module
here gives the production ``add_followers`` actor another function (its
name, queue and options stay) and keeps everything else of ``lab.workers``: run as ``dramatiq lab.naive.duplicating`` or
``dramatiq lab.naive.swallowing``."""
