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


#: (target, measured row, baseline row or None, threshold, kind). A ratio
#: target compares medians: measured / baseline >= threshold. A limit
#: target compares the measured median itself: below threshold.
TARGETS = [
    ("1. sync ≥ 100× (a) original's loop", "sync", "loop", 100, "ratio"),
    ("1. sync ≥ 1.0× (c) COPY", "sync", "copy", 1.0, "ratio"),
    ("2. async, 1 follower/message ≥ 0.75× (d) pika pipeline", "async_one", "pika", 0.75, "ratio"),
    ("3. async, default chunking ≥ 0.5× sync", "async_chunked", "sync", 0.5, "ratio"),
    ("4. API async requests/s ≥ 0.5× (e) confirmed publish", "api_rps", "publish", 0.5, "ratio"),
    ("4. p99 latency of an async request < 50 ms", "api_p99", None, 50, "limit"),
    ("5. peak RSS of every worker process < 200 MB", "worker_rss", None, 200, "limit"),
    ("5. API RSS flat: growth during the job < 5 MB", "api_rss_growth", None, 5, "limit"),
]


def verdicts(results):
    lines = ["| target | measured | verdict |", "|---|---:|---|"]
    for name, measured, baseline, threshold, kind in TARGETS:
        value = results.median(measured)
        if kind == "ratio":
            base = results.median(baseline)
            if value is None or not base:
                continue
            ratio = value / base
            # 3 significant digits, so that 0.499 never shows as a missed "0.50".
            shown, ok = f"{ratio:,.3g}×", ratio >= threshold
        else:
            if value is None:
                continue
            unit = results.rows[measured][2]
            shown, ok = f"{fmt(value, unit)} {unit}", value < threshold
        lines.append(f"| {name} | {shown} | {'PASS' if ok else 'MISS'} |")
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
