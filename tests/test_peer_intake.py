"""A peer's intake killed in the middle of a request (lab compare's intake
row), against the real RabbitMQ and PostgreSQL: it dies between two
publishes, with some of the request's units queued and no answer given;
the runner sees no answer rather than an error, and the intake started
after it finds the user again instead of making it twice."""

from harness import queue_depth
from lab.peers.runner import Intake, Peer, PeerStack


def test_an_intake_killed_mid_request_leaves_it_half_sent_and_the_next_one_goes_on():
    peer = Peer("dramatiq", "bare Dramatiq")
    env = {"FOLLOWERS_PER_MESSAGE": "5", "FAULT_API_KILL_PERCENT": "100", "PASSWORD_HASH_COST": "1024"}
    stack = PeerStack(peer, "peer_intake", env=env)
    stack.reset()
    stack.log_dir.mkdir(parents=True, exist_ok=True)
    killed = Intake(peer, stack)
    try:
        assert killed.send("author", "half", 20) is None  # 4 units; killed after 1, 2 or 3 of them
    finally:
        killed.close()
    half_sent = queue_depth(stack.queue_name)
    assert 1 <= half_sent <= 3
    assert "injected kill" in killed.log_path.read_text()

    stack.env["FAULT_API_KILL_PERCENT"] = "0"
    intake = Intake(peer, stack)
    try:
        first = intake.send("author", "whole", 5)
        second = intake.send("author", "whole2", 20)
    finally:
        intake.close()
    assert first["refused"] is None and first["units"] == [[0, 5]]
    assert second["userId"] == first["userId"] and len(second["units"]) == 4
    assert queue_depth(stack.queue_name) == half_sent + 5
