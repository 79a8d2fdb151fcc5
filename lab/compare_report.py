"""lab compare's HTML: the verdict matrix (a row a scenario, a column an
implementation) above lab.report's page of every cell's run and timeline."""

from html import escape

from .report import write_report
from .scenarios import BY_NAME

CSS = """<style>table.matrix td{min-width:14em}table.matrix .facts{font-size:12px;color:#3b4457;margin-top:4px}
table.matrix .asks{font-size:12px;color:#5d6678}</style>"""


def render_matrix(cells, *, command="", measured=""):
    """The matrix; each cell links to its run's section (``#run-<index>``,
    the cell's place in ``cells``, as write_compare_report passes them)."""
    rows = list(dict.fromkeys(cell.row for cell in cells))
    columns = list(dict.fromkeys(cell.implementation for cell in cells))
    place = {(cell.row.name, cell.implementation.key): (index, cell) for index, cell in enumerate(cells)}
    head = "<th>scenario</th>" + "".join(f"<th>{escape(column.label)}</th>" for column in columns)
    body = []
    for row in rows:
        scenario = BY_NAME[row.name]
        title = f'<b>{escape(row.name)}</b> {escape(scenario.original)}<div class="asks">{escape(scenario.title)}</div>'
        tds = [f"<td>{title}</td>"]
        for column in columns:
            if (row.name, column.key) not in place:
                tds.append("<td></td>")
                continue
            index, cell = place[(row.name, column.key)]
            tds.append(f'<td class="cell" data-scenario="{escape(row.name)}" '
                       f'data-implementation="{escape(column.key)}">'
                       f'<a href="#run-{index}"><span class="verdict {cell.verdict}">{cell.verdict}</span></a>'
                       f'<div class="facts">{escape(cell.observed)}</div></td>')
        body.append(f"<tr>{''.join(tds)}</tr>")
    caption = " \u00b7 ".join(filter(None, [f"<code>{escape(command)}</code>" if command else "",
                                           escape(measured)]))
    return (f'{CSS}<h2 style="margin-top:14px">The lab against its peers</h2>'
            f'<div class="muted">{caption}</div>'
            f'<table class="matrix"><thead><tr>{head}</tr></thead><tbody>{"".join(body)}</tbody></table>'
            '<div class="muted">Every column ran the same requests, faults, limits, processes and threads, '
            "under the same supervisor; each verdict is its row's judge applied to what the database, the "
            "queues and the workers' delivery rows showed. Below: every run, with its timeline.</div>")


def render_cluster(row, implementations):
    """lab cluster's scenario, every column side by side: a verdict each,
    then the run's own table."""
    tds = "".join(
        f'<td class="cell" data-scenario="cluster" data-implementation="{escape(i.key)}">'
        f'<span class="verdict {row.verdicts[i.key]}">{row.verdicts[i.key]}</span>'
        f'<div class="facts">{escape(row.observed[i.key])}</div></td>'
        for i in implementations if i.key in row.verdicts)
    head = "".join(f"<th>{escape(i.label)}</th>" for i in implementations if i.key in row.verdicts)
    return (f'<h2 style="margin-top:14px">A RabbitMQ node lost under load</h2>'
            f'<table class="matrix"><thead><tr><th>scenario</th>{head}</tr></thead><tbody><tr>'
            '<td><b>cluster</b><div class="asks">a three-node lab cluster: the node leading the work queue '
            f'stopped, the next SIGKILLed, under continuous load</div></td>{tds}</tr></tbody></table>'
            f'<pre>{escape(chr(10).join(row.lines))}</pre>')


def write_compare_report(cells, path, *, command="", measured="", cluster=None):
    from .compare import IMPLEMENTATIONS

    before = render_matrix(cells, command=command, measured=measured) if cells else ""
    if cluster is not None:
        before += render_cluster(cluster, IMPLEMENTATIONS)
    return write_report([cell.result for cell in cells], path, title="Failure lab: the peers compared",
                        before=before)
