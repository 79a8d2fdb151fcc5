"""The peers: other ways to run the original's consumer, for
``python -m lab compare``. Each does the same per-follower work on the same
database, with the same faults injected at the same places, so that the lab
judges them with the same verdicts as our own workers.

Lab only: nothing outside ``lab/`` imports them, and Celery is a lab-only
dependency (requirements-lab.txt).
"""
