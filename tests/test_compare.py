"""python -m lab compare for real, on the two rows whose failures show
within seconds (poison, killer), against all three implementations.

The verdicts asserted are the ones measured with the pinned versions
(requirements-lab.txt, requirements.txt): a peer whose behaviour changes
after an upgrade fails here, and docs/compare.md then needs measuring again.
"""

from concurrent.futures import ThreadPoolExecutor

import pytest

try:
    import celery  # noqa: F401  (a lab-only dependency)
except ImportError:
    pytest.fail("lab compare needs Celery: .venv/bin/pip install -r requirements-lab.txt "
                "(./run tests installs it)", pytrace=False)

from lab.compare import BY_KEY, IMPLEMENTATIONS, ROW_BY_NAME, matrix_text, run_cell, run_compare
from lab.compare_report import render_matrix
from lab.peers.observe import unit_of_body

#: Each row's window: long enough for Celery's pool to notice four dead
#: processes (up to ~5 s each), and for our killer's three hard-limit kills
#: (~9 s); a peer that never drains costs the whole window.
WINDOWS_S = {"poison": 22, "killer": 14}
#: Bare Dramatiq's poison cell never drains: its crash loop starts in the
#: first second (20 crashes in a 10 s window, measured), so a longer window
#: only costs the suite time, and tells the same verdict with the same facts.
DRAMATIQ_POISON_WINDOW_S = 10

MEASURED = {
    ("poison", "dramatiq"): "FAILED",  # Dramatiq's retry count lives in the message: the crash loop never ends
    ("poison", "celery"): "SOLVED",  # Celery 5.7's retry_on_worker_lost bounds it (max_retries), then the DLX
    ("poison", "ours"): "SOLVED",
    ("killer", "dramatiq"): "FAILED",  # TimeLimit cannot interrupt time.sleep: the slot is held for good
    ("killer", "celery"): "SOLVED",  # the soft limit's signal interrupts the sleep; retried, then dead-lettered
    ("killer", "ours"): "SOLVED",
}


@pytest.fixture(scope="module")
def cells():
    # Bare Dramatiq's killer cell, once its other jobs are done in its first
    # seconds, only waits out its window beside a slot held for good: it
    # takes no CPU, so it runs beside the poison row on a stack of its own
    # rather than after it (~15 s of the suite). The other cells run one at
    # a time, as lab compare runs them.
    beside = ("killer", "dramatiq")
    others = [implementation for implementation in IMPLEMENTATIONS if implementation.key != beside[1]]
    with ThreadPoolExecutor(1) as pool:
        beside_cell = pool.submit(run_cell, ROW_BY_NAME[beside[0]], BY_KEY[beside[1]], window=WINDOWS_S[beside[0]],
                                  progress=False, stack_prefix="test_compare_beside")
        found = run_compare([ROW_BY_NAME["poison"]], others, window=WINDOWS_S["poison"], progress=False,
                            stack_prefix="test_compare")
        found += run_compare([ROW_BY_NAME["poison"]], [BY_KEY["dramatiq"]], window=DRAMATIQ_POISON_WINDOW_S,
                             progress=False, stack_prefix="test_compare")
        found += run_compare([ROW_BY_NAME["killer"]], others, window=WINDOWS_S["killer"], progress=False,
                             stack_prefix="test_compare")
        found.append(beside_cell.result())
    return {(cell.row.name, cell.implementation.key): cell for cell in found}


@pytest.mark.parametrize("place", list(MEASURED), ids=[f"{row}-{key}" for row, key in MEASURED])
def test_verdict_is_the_measured_one(cells, place):
    cell = cells[place]
    assert cell.verdict == MEASURED[place], (
        f"{cell.implementation.label} on {cell.row.name}: {cell.observed} "
        f"(logs: artifacts/logs/*test_compare*_{place[1]}/; measure again and update docs/compare.md)")


def test_what_the_verdicts_rest_on(cells):
    """The facts behind each verdict, as a user would check them."""
    dramatiq_poison = cells[("poison", "dramatiq")].facts
    assert dramatiq_poison.drain_s is None and dramatiq_poison.dead == 0 and dramatiq_poison.crashes >= 2
    celery_poison = cells[("poison", "celery")].facts
    assert celery_poison.dead == 1 and celery_poison.created == celery_poison.requested - 1
    assert 2 <= celery_poison.crashes <= 4  # the first run and celery's default max_retries (3)
    dramatiq_killer = cells[("killer", "dramatiq")].facts
    assert dramatiq_killer.others_done == dramatiq_killer.others  # the other threads did the rest...
    assert dramatiq_killer.longest_hold_s is None and dramatiq_killer.dead == 0  # ...around a slot held for good
    for key in ("celery", "ours"):
        killer = cells[("killer", key)].facts
        assert killer.dead == 1 and killer.others_done == killer.others == 5 and killer.lost == 0


def test_the_matrix_shows_every_cell(cells):
    text = matrix_text(list(cells.values()))
    header = text.splitlines()[0]
    assert all(implementation.label in header for implementation in IMPLEMENTATIONS)
    html = render_matrix(list(cells.values()), command="python -m lab compare", measured="today")
    assert html.count('class="cell"') == 6 and html.count('href="#run-') == 6
    for (row, key), cell in cells.items():
        assert f'data-scenario="{row}" data-implementation="{key}"' in html
        assert f'verdict {cell.verdict}' in html


def test_dead_letters_are_read_back_as_units_whatever_the_peer():
    dramatiq_body = b'{"queue_name":"q","actor_name":"add_followers","args":[7,"fan",1,11],"kwargs":{}}'
    celery_body = b'[[7, "fan", 1, 11], {}, {"callbacks": null}]'
    assert unit_of_body(dramatiq_body) == unit_of_body(celery_body) == (7, "fan", 11, 1)
    assert unit_of_body(b"not json") is None and unit_of_body(b'{"args": []}') is None
    assert set(BY_KEY) == {"dramatiq", "celery", "ours"}
