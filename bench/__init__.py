"""The benchmark: ``python -m bench`` (see docs/benchmark.md).

Baselines (the original's loop, ``insert_many``, ``COPY``, a minimal pika
consumer, confirmed publishes) and the real service (gunicorn and
``dramatiq actors`` via ``harness.Stack``) run side by side, alternating,
for several rounds; the table shows medians, ranges and the issue's ratios.
"""
