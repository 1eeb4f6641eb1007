"""The I/O path's step recorder (sim/stats.py StepLatency): records kept by request id,
summarized when read, bounded in memory."""

from types import SimpleNamespace

from acrn_sim.hv import hypervisor
from acrn_sim.sim.stats import StepLatency
from conftest import boot_user


def _request(steps: StepLatency, seq: int, base: int, device: str = "uart") -> None:
    r = steps.begin(seq, "VM", 0, base, "exit_handler", "exit")
    for n in range(2, 10):
        steps.clock.now = base + 10 * n
        steps.stamp(seq, n, f"f{n}", f"step {n}", device if n == 5 else None)
    steps.finish(r, base + 100 + seq, "back_in_guest", "back")


def test_step_recorder_summarises_every_request_but_keeps_only_the_first():
    steps = StepLatency(SimpleNamespace(now=0), keep=3)
    for seq in range(1, 11):
        _request(steps, seq, 1000 * seq)
    assert len(steps.requests) == 3 and [r.req_id for r in steps.complete()] == [1, 2, 3]
    summary = steps.breakdown()["VM"]["uart"]
    assert summary["total"]["count"] == 10
    # step 9 -> 10 lasted 100 + seq - 90 cycles for request seq
    assert summary["9"]["min"] == 11 and summary["9"]["max"] == 20
    assert summary["2"]["mean"] == 10
    assert not steps.keeping()


def test_step_recorder_in_a_run_counts_requests_past_the_kept_ones(monkeypatch):
    monkeypatch.setattr(hypervisor, "StepLatency", lambda env, **kw: StepLatency(env, keep=5, **kw))
    run = boot_user("bench.elf", cmdlines=["pio 50"])
    assert run.dm().exit_code == 0
    counted = run.hv.stats.io_requests["POST_VM1"]["unclaimed-pio"]["total"]["count"]
    assert counted == 50  # every IN of the guest's loop
    assert len(run.hv.ioreq_steps.requests) == 5


def test_step_recorder_keeps_a_steps_first_time():
    """A second HSM interrupt (for another VM's request) that finds this request still PENDING
    does not move its step 3."""
    clock = SimpleNamespace(now=200)
    steps = StepLatency(clock)
    r = steps.begin(1, "VM", 0, 100, "exit_handler", "exit")
    steps.stamp(1, 3, "isr", "HSM interrupt handler")
    clock.now = 300
    steps.stamp(1, 3, "isr", "HSM interrupt handler, for another request")
    assert r.steps[3] == 200 and r.what[3] == "HSM interrupt handler"


def test_io_step_summary_is_made_when_read_not_at_the_end_of_the_run(monkeypatch):
    """A run whose statistics nobody reads does not summarize them (sorting every request's
    step times costs about as much as a thousand round trips)."""
    made = []
    breakdown = StepLatency.breakdown

    def counting(self):
        made.append(1)
        return breakdown(self)

    monkeypatch.setattr(StepLatency, "breakdown", counting)
    run = boot_user("bench.elf", cmdlines=["pio 20"])
    assert run.dm().exit_code == 0 and made == []
    summary = run.hv.stats.io_requests["POST_VM1"]["unclaimed-pio"]
    assert summary["total"]["count"] == 20 and made == [1]
    assert run.hv.stats.to_json()["io_requests"]["POST_VM1"]["unclaimed-pio"] == summary
