"""The lab report: one self-contained HTML page per lab run. The verdict
table, then per result a timeline of what the workers did: a lane per worker
process and thread, a bar per delivery of a message, coloured by its outcome.
Inline CSS and SVG only, so the file opens anywhere without a network; every
bar has a native tooltip (SVG <title>) with its job, unit, times and error."""

import time
from collections import Counter, namedtuple
from html import escape
from pathlib import Path

from .scenarios import BY_NAME

# Outcome -> (fill colour, legend text). "crash" and "open" are not stored
# outcomes: they are a "running" row whose process died under it, or that was
# still running when the lab stopped watching.
OUTCOMES = {
    "done": ("#2f9e5b", "done"),
    "retrying": ("#e8a317", "failed, will be retried"),
    "dead-lettered": ("#d9363e", "dead-lettered"),
    "crash": ("#5b2a86", "worker process died under it (\u2715 = process exit)"),
    "open": ("#8a94a6", "still running when the lab stopped watching"),
}
VERDICT_NOTES = {
    "SOLVED": "robust mode: the failure does not happen",
    "REPRODUCED": "naive mode: the original's failure shows, as it should",
    "FAILED": "the lab did not observe what it expected",
}
WIDTH, LABEL_W, RIGHT_PAD = 1000, 150, 16
LANE_H, BAR_H, AXIS_H, TOP_H = 24, 16, 26, 18
DOT = " \u00b7 "
JOB_STRIPES = ["#1f5fbf", "#f08c00", "#0b8a8a", "#c2255c", "#5c940d", "#7048e8", "#868e96", "#a61e4d"]

CSS = """body{font:14px/1.45 system-ui,sans-serif;color:#1d2433;background:#f6f7f9;margin:0;padding:24px 32px}
h1{font-size:22px;margin:0 0 4px}h2{font-size:17px;margin:0}.muted{color:#5d6678}
table{border-collapse:collapse;background:#fff;margin:14px 0 8px;box-shadow:0 1px 2px #0001;width:100%}
th,td{padding:6px 10px;border-bottom:1px solid #e3e6eb;text-align:left;vertical-align:top}
th{background:#eef0f4;font-weight:600;font-size:13px;white-space:nowrap}td.num{white-space:nowrap}
.verdict{display:inline-block;padding:1px 8px;border-radius:10px;font-weight:600;font-size:12px;color:#fff}
.SOLVED{background:#2f9e5b}.REPRODUCED{background:#1f5fbf}.FAILED{background:#d9363e}
section.result{background:#fff;margin:18px 0;padding:14px 18px;border-radius:6px;box-shadow:0 1px 2px #0001}
section.result header{display:flex;gap:10px;align-items:center;flex-wrap:wrap}
.facts{margin:6px 0 8px}.facts b{font-weight:600}
.legend{display:flex;flex-wrap:wrap;gap:6px 18px;margin:10px 0 0;font-size:13px}
.legend span{display:inline-flex;align-items:center;gap:6px}.legend path{stroke-width:2}
.swatch{width:22px;height:12px;border-radius:2px;display:inline-block}a{color:#1f5fbf;text-decoration:none}
svg.timeline{width:100%;height:auto;display:block;font:11px system-ui,sans-serif}"""


def write_report(results, path, **options):
    """Write the report of ``results`` (lab.runner.Result) to ``path``;
    ``options`` as render_report's."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(render_report(results, **options), encoding="utf-8")
    return path


def render_report(results, *, title="Failure lab report", before=""):
    """``before``: HTML put above the verdict table (lab compare's matrix)."""
    generated = time.strftime("%Y-%m-%d %H:%M:%S")
    body = "\n".join([
        f"<h1>{escape(title)}</h1>",
        f'<div class="muted">{escape(_summary(results))} \u00b7 generated {generated}</div>',
        before,
        _verdict_table(results),
        _legend(),
        *(_result_section(result, index) for index, result in enumerate(results)),
    ])
    return (f'<!doctype html>\n<html lang="en"><head><meta charset="utf-8">'
            f"<title>{escape(title)} {generated}</title><style>{CSS}</style></head>\n"
            f"<body>\n{body}\n</body></html>\n")


def _summary(results):
    counts = Counter(result.verdict for result in results)
    return f"{len(results)} runs: " + ", ".join(f"{n} {verdict}" for verdict, n in sorted(counts.items()))


def _drain_text(result):
    return "never" if result.seen.get("drain_s") is None else f"{result.seen['drain_s']} s"


def _verdict_badge(verdict):
    note = VERDICT_NOTES.get(verdict, "")
    return f'<span class="verdict {escape(verdict)}" title="{escape(note)}">{escape(verdict)}</span>'


def _verdict_table(results):
    head = "".join(f"<th>{name}</th>" for name in
                   ("scenario", "original", "mode", "expected", "observed", "drain time", "verdict"))
    rows = "".join(
        f'<tr class="run"><td><a href="#run-{index}">{escape(r.scenario)}</a></td><td>{escape(r.original)}</td>'
        f"<td>{escape(r.mode)}</td><td>{escape(r.expected)}</td><td>{escape(r.observed)}</td>"
        f'<td class="num">{escape(_drain_text(r))}</td><td>{_verdict_badge(r.verdict)}</td></tr>'
        for index, r in enumerate(results)
    )
    return f'<table class="verdicts"><thead><tr>{head}</tr></thead><tbody>{rows}</tbody></table>'


def _legend():
    def item(swatch, text):
        return f"<span>{swatch}{text}</span>"

    def mark(colour, dash):  # a small vertical line, as drawn across the timelines
        return f'<svg width="10" height="16"><path d="M5 0v16" stroke="{colour}" stroke-dasharray="{dash}"/></svg>'

    items = [item(f'<i class="swatch" style="background:{colour}"></i>', escape(text))
             for colour, text in OUTCOMES.values()]
    items += [
        item('<i class="swatch" style="background:linear-gradient(#1f5fbf 0 3px,#ddd 3px)"></i>',
             "top stripe: the job (one colour per job); number: the unit"),
        item('<i class="swatch" style="background:linear-gradient(90deg,#1d2433 0 3px,#ddd 3px)"></i>',
             "dark left edge: a redelivery"),
        item(mark("#d9363e", "4 3"), "dramatiq (all its processes) exited and was restarted"),
        item(mark("#2f9e5b", "2 2"), "queue drained"),
        item("", '<span class="muted">' + DOT.join(f"{verdict}: {escape(note)}"
                                                     for verdict, note in VERDICT_NOTES.items()) + "</span>"),
    ]
    return f'<div class="legend">{"".join(items)}</div>'


def _result_section(result, index):
    title = getattr(BY_NAME.get(result.scenario), "title", "")
    return f"""<section class="result" id="run-{index}" data-scenario="{escape(result.scenario)}" \
data-mode="{escape(result.mode)}">
<header><h2>{escape(result.scenario)} {escape(result.original)} \u00b7 {escape(result.mode)}</h2>
{_verdict_badge(result.verdict)}<span class="muted">{escape(title)}</span></header>
<div class="facts"><b>expected</b> {escape(result.expected)}{DOT}<b>observed</b> {escape(result.observed)}
{DOT}<b>drained</b> {escape(_drain_text(result))} \u00b7 {len(result.events)} deliveries</div>
{_timeline_svg(result)}
</section>"""


# --- The timeline ---------------------------------------------------------

Event = namedtuple("Event", "message_id job_id unit user_id pid thread redelivered started ended outcome error")


def _lanes(events):
    """Distinct (pid, thread) in order of first delivery, grouped by process."""
    first_seen = dict.fromkeys((event.pid, event.thread) for event in events)
    pid_order = {pid: i for i, pid in enumerate(dict.fromkeys(pid for pid, _ in first_seen))}
    return sorted(first_seen, key=lambda lane: (pid_order[lane[0]], str(lane[1])))


def _watch_end(result):
    """Seconds after ``started`` the lab stopped watching: the drain, or the
    window when the queue never drained (Result does not record it)."""
    scenario = BY_NAME.get(result.scenario)
    window = scenario.modes[result.mode].window if scenario and result.mode in scenario.modes else 0
    window = result.seen.get("window_s", window)  # lab compare's cells carry their own
    drain = result.seen.get("drain_s")
    return drain if drain is not None else window


def _next_deliveries(events):
    """Row index -> start epoch of the next delivery of the same message."""
    following, last_row = {}, {}
    for row, event in enumerate(events):  # rows come ordered by start
        if event.message_id in last_row:
            following[last_row[event.message_id]] = float(event.started)
        last_row[event.message_id] = row
    return following


def _delivery(event, result, watch_end, redelivered_at):
    """(kind, start s, end s) of one event, relative to ``started``.
    A "running" row never ended: its process died under it (a crash, ending
    when the process was seen gone or, if sooner, when the broker gave the
    message to another worker), or it still ran when the lab stopped watching."""
    start = float(event.started) - result.started
    if event.ended is not None:
        return event.outcome, start, float(event.ended) - result.started
    ends = [at for at in (result.process_exits.get(event.pid), redelivered_at) if at is not None]
    if ends:
        return "crash", start, min(ends) - result.started
    return "open", start, max(watch_end, start)


def _time_span(result, deliveries):
    ends = [end for _, _, end in deliveries] + [_watch_end(result)]
    ends += [at - result.started for at in result.process_exits.values()]
    ends += [at - result.started for at, _ in result.worker_exits]
    return max(1.0, max(ends) * 1.02)


def _timeline_svg(result):
    events = [Event(*row) for row in result.events]
    if not events:
        scenario = BY_NAME.get(result.scenario)
        why = " (this scenario runs no workers)" if scenario and not scenario.needs_workers else ""
        return f'<p class="muted timeline-empty">No deliveries recorded{why}.</p>'
    lanes = _lanes(events)
    lane_y = {lane: TOP_H + i * LANE_H for i, lane in enumerate(lanes)}
    bottom = TOP_H + len(lanes) * LANE_H
    following = _next_deliveries(events)
    deliveries = [_delivery(event, result, _watch_end(result), following.get(row))
                  for row, event in enumerate(events)]
    span = _time_span(result, deliveries)
    scale = (WIDTH - LABEL_W - RIGHT_PAD) / span

    def x(seconds):
        return LABEL_W + max(0.0, seconds) * scale

    job_colours = {job: JOB_STRIPES[i % len(JOB_STRIPES)]
                   for i, job in enumerate(dict.fromkeys(event.job_id for event in events))}
    last_start = max(start for _, start, _ in deliveries)
    parts = [_lane_backgrounds(lanes, lane_y), _axis(span, x, bottom)]
    parts += [_bar(event, delivery, lane_y[(event.pid, event.thread)], x, job_colours[event.job_id], last_start)
              for event, delivery in zip(events, deliveries, strict=True)]
    parts += [_process_exit_marks(result, lanes, lane_y, x), _run_marks(result, x, bottom)]
    return (f'<svg class="timeline" data-lanes="{len(lanes)}" viewBox="0 0 {WIDTH} {bottom + AXIS_H}" '
            f'xmlns="http://www.w3.org/2000/svg" role="img" '
            f'aria-label="timeline of {escape(result.scenario)} {escape(result.mode)}">{"".join(parts)}</svg>')


def _lane_backgrounds(lanes, lane_y):
    parts, shade, previous_pid = [], False, None
    for pid, thread in lanes:
        shade = shade if pid == previous_pid else not shade  # one band per process
        previous_pid, y = pid, lane_y[(pid, thread)]
        parts.append(
            f'<g class="lane" data-pid="{pid}" data-thread="{escape(str(thread))}">'
            f'<rect x="0" y="{y}" width="{WIDTH}" height="{LANE_H}" fill="{"#f1f3f7" if shade else "#fff"}"/>'
            f'<text x="6" y="{y + LANE_H / 2 + 4}" fill="#3b4457">pid {pid}{DOT}{escape(str(thread))}</text></g>'
        )
    return "".join(parts)


def _axis(span, x, bottom):
    step = next(step for step in (0.1, 0.2, 0.5, 1, 2, 5, 10, 20, 30, 60, 120) if span / step <= 12)
    parts = [f'<line x1="{LABEL_W}" y1="{bottom}" x2="{WIDTH - RIGHT_PAD}" y2="{bottom}" stroke="#8a94a6"/>',
             f'<text x="6" y="{bottom + 16}" fill="#5d6678">since 1st request</text>']
    for i in range(int(span / step) + 1):
        left = x(i * step)
        parts.append(f'<line x1="{left:.1f}" y1="{TOP_H}" x2="{left:.1f}" y2="{bottom + 4}" stroke="#dde1e8"/>'
                     f'<text x="{left:.1f}" y="{bottom + 16}" text-anchor="middle" fill="#5d6678">'
                     f"{i * step:g} s</text>")
    return "".join(parts)


def _bar_tooltip(event, kind, start, end):
    redelivered = f"{DOT}redelivered" if event.redelivered else ""
    lines = [f"job {event.job_id} unit {event.unit} (user {event.user_id}){DOT}{kind}{redelivered}",
             f"{start:.2f} s \u2192 {end:.2f} s ({end - start:.2f} s){DOT}pid {event.pid} {event.thread}",
             f"message {event.message_id}", *([str(event.error)] if event.error else [])]
    return escape("\n".join(lines))


def _bar(event, delivery, y, x, job_colour, last_start):
    kind, start, end = delivery
    left, width = x(start), max(4.0, x(end) - x(start))  # a 5 ms delivery still shows
    top = y + (LANE_H - BAR_H) / 2
    opacity = ' fill-opacity="0.6"' if kind == "open" else ""
    parts = [f'<g class="bar {escape(kind)}" data-outcome="{escape(event.outcome)}">',
             f"<title>{_bar_tooltip(event, kind, start, end)}</title>",
             f'<rect x="{left:.1f}" y="{top}" width="{width:.1f}" height="{BAR_H}" rx="2" '
             f'fill="{OUTCOMES.get(kind, OUTCOMES["open"])[0]}"{opacity}/>',
             f'<rect x="{left:.1f}" y="{top}" width="{width:.1f}" height="3" fill="{job_colour}"/>']
    if event.redelivered:  # a dark left edge: the broker's second (or later) try
        parts.append(f'<rect x="{left:.1f}" y="{top}" width="2" height="{BAR_H}" fill="#1d2433"/>')
    if kind == "open" and width > 260:
        # The stall: when nothing started after it, everything queued behind it waited.
        stalled = f"{DOT}nothing delivered after it started" if start >= last_start else ""
        parts.append(f'<text x="{left + width - 6:.1f}" y="{top + BAR_H - 4}" text-anchor="end" fill="#1d2433">'
                     f"job {event.job_id} unit {event.unit}: still running after {end - start:.1f} s{stalled}</text>")
    elif kind != "open" and width >= 7 * len(str(event.unit)) + 4:
        parts.append(f'<text x="{left + width / 2:.1f}" y="{top + BAR_H - 3}" text-anchor="middle" '
                     f'fill="#fff" font-size="10">{escape(str(event.unit))}</text>')
    return "".join(parts) + "</g>"


def _process_exit_marks(result, lanes, lane_y, x):
    parts = []
    for pid, thread in lanes:
        if pid in result.process_exits:
            at, y = result.process_exits[pid] - result.started, lane_y[(pid, thread)]
            parts.append(f'<g class="process-exit"><title>pid {pid} seen gone at {at:.2f} s</title>'
                         f'<text x="{x(at):.1f}" y="{y + LANE_H / 2 + 5}" text-anchor="middle" font-size="15" '
                         f'font-weight="700" fill="#d9363e">\u2715</text></g>')
    return "".join(parts)


def _run_marks(result, x, bottom):
    """Restarts of the whole dramatiq (dashed red) and the drain (dotted green)."""
    parts = []
    for at, code in result.worker_exits:
        at, left = at - result.started, x(at - result.started)
        parts.append(f'<g class="worker-exit"><title>dramatiq exited (code {code}) at {at:.2f} s, restarted</title>'
                     f'<line x1="{left:.1f}" y1="{TOP_H - 4}" x2="{left:.1f}" y2="{bottom}" stroke="#d9363e" '
                     f'stroke-dasharray="4 3" stroke-width="1.5"/><text x="{left:.1f}" y="{TOP_H - 6}" '
                     f'text-anchor="middle" fill="#d9363e">restart</text></g>')
    drain = result.seen.get("drain_s")
    if drain is not None:
        left = x(drain)
        near_edge = left > WIDTH - 120  # then the label goes left of the line, inside the picture
        label_at, anchor = (left - 3, "end") if near_edge else (left + 3, "start")
        parts.append(f'<g class="drained"><line x1="{left:.1f}" y1="{TOP_H - 4}" x2="{left:.1f}" y2="{bottom}" '
                     f'stroke="#2f9e5b" stroke-dasharray="2 2" stroke-width="1.5"/><text x="{label_at:.1f}" '
                     f'y="{TOP_H - 6}" text-anchor="{anchor}" fill="#2f9e5b">drained {drain} s</text></g>')
    return "".join(parts)
