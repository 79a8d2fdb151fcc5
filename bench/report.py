"""The results table: each row's median and range over the rounds, then
each target of the issue with its ratio and PASS or MISS."""

import statistics


def fmt(value, unit):
    if value is None:
        return "n/a"
    if unit in ("ms", "MB"):
        return f"{value:,.1f}"
    if unit == "cores":
        return f"{value:,.2f}"
    if value < 100:
        return f"{value:,.1f}"
    return f"{value:,.0f}"


class Results:
    def __init__(self, rows):
        #: key -> (label, size, unit), in the order of the table
        self.rows = rows
        self.values = {key: [] for key in rows}

    def add(self, key, value):
        self.values[key].append(value)

    def median(self, key):
        values = self.values.get(key)
        return statistics.median(values) if values else None

    def table(self):
        lines = ["| workload | size | unit | median | min–max | rounds |", "|---|---|---|---:|---:|---:|"]
        for key, (label, size, unit) in self.rows.items():
            values = self.values[key]
            if not values:
                continue
            spread = f"{fmt(min(values), unit)}–{fmt(max(values), unit)}"
            lines.append(f"| {label} | {size} | {unit} | {fmt(self.median(key), unit)} | {spread} | {len(values)} |")
        return "\n".join(lines)


#: (target, measured row, baseline row or None, threshold, kind), of issue
#: 15. A ratio target compares medians: measured / baseline >= threshold. A
#: limit target compares the measured median itself: below threshold; a
#: measured row ending in "_" names every row it begins, and the worst
#: (highest) median of them is compared. A reported ratio has no threshold.
TARGETS = [
    ("1. async, 1 follower/message ≥ 1.0× (f) bare Dramatiq", "async_one", "dramatiq", 1.0, "ratio"),
    ("1. async, 1 follower/message ≥ 0.75× (d) pika pipeline", "async_one", "pika", 0.75, "ratio"),
    ("2. API async requests/s ≥ 1.0× (e) confirmed publish", "api_rps", "publish", 1.0, "ratio"),
    ("2. p99 latency of an async request, 16 clients at once < 20 ms", "api_p99_loaded", None, 20, "limit"),
    ("2. p99 latency of an async request (one client) < 20 ms", "api_p99", None, 20, "limit"),
    ("2. p99 from a 202 to its message on the queue (the outbox) < 50 ms", "handoff_p99", None, 50, "limit"),
    ("3. async, default chunking ≥ 1.0× sync", "async_chunked", "sync", 1.0, "ratio"),
    ("4. 1-follower jobs end to end ÷ the scrypt bound", "small_e2e", "scrypt_bound", None, "reported"),
    ("4. scrypt's share of a 1-follower job's worker CPU", "scrypt", "small_cpu", None, "reported"),
    ("6. a page of followers by cursor, at every depth < 20 ms", "page_cursor_", None, 20, "limit"),
    ("7. sync ≥ 1.0× (c) COPY", "sync", "copy", 1.0, "ratio"),
    ("7. the statements of sync alone ÷ (c) COPY", "sync_statements", "copy", None, "reported"),
    ("7. sync ÷ its statements alone (the rest: one scrypt hash, HTTP)", "sync", "sync_statements", None,
     "reported"),
    ("7. peak RSS of every worker process < 200 MB", "worker_rss", None, 200, "limit"),
]


def worst(results, measured):
    """The median of ``measured``, or the highest median of every row it
    begins when it ends in "_"; None if nothing was measured."""
    if not measured.endswith("_"):
        return results.median(measured)
    medians = [results.median(key) for key in results.rows if key.startswith(measured)]
    medians = [value for value in medians if value is not None]
    return max(medians) if medians else None


def unit_of(results, measured):
    return next(unit for key, (_, _, unit) in results.rows.items() if key.startswith(measured))


def verdicts(results):
    lines = ["| target | measured | verdict |", "|---|---:|---|"]
    for name, measured, baseline, threshold, kind in TARGETS:
        value = worst(results, measured)
        if kind in ("ratio", "reported"):
            base = results.median(baseline)
            if value is None or not base:
                continue
            ratio = value / base
            # 3 significant digits, so that 0.499 never shows as a missed "0.50".
            shown = f"{ratio:,.3g}×"
            verdict = "reported" if kind == "reported" else ("PASS" if ratio >= threshold else "MISS")
        else:
            if value is None:
                continue
            unit = unit_of(results, measured)
            shown, verdict = f"{fmt(value, unit)} {unit}", ("PASS" if value < threshold else "MISS")
        lines.append(f"| {name} | {shown} | {verdict} |")
    return "\n".join(lines)


#: (what, row, baseline row): ratios of medians shown as costs, not targets.
COSTS = [
    ("quorum / classic queues: async, 1 follower/message", "async_one", "async_one_classic"),
    ("quorum / classic queues: async, default chunking", "async_chunked", "async_chunked_classic"),
]


def costs(results):
    lines = ["| comparison | ratio |", "|---|---:|"]
    for name, measured, baseline in COSTS:
        value, base = results.median(measured), results.median(baseline)
        if value is not None and base:
            lines.append(f"| {name} | {value / base:,.3g}× |")
    return "\n".join(lines) if len(lines) > 2 else ""
