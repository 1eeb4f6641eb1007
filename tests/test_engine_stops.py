"""The engine's stops in front of exiting instructions (one-address code hooks), its register
copy taken at each stop, and the I/O step recorder's bounded memory."""

from types import SimpleNamespace

from unicorn import x86_const as X

import hv.hypervisor
from conftest import boot, boot_user
from sim.engine import Engine, StopReason
from sim.stats import StepLatency

# 0x1000: mov eax, 0x11223344 ; inc ebx ; in al, 0x80 ; inc ecx ; inc ecx ; jmp 0x1000
LOOP = bytes.fromhex("b844332211ffc3e480ffc1ffc1ebf1")
IN_AT = 0x1000 + 7


def _engine(hotpath: str) -> Engine:
    run = boot("hello.elf", hotpath=hotpath)  # a decoder and profile as the simulator has them
    vcpu = run.vm.vcpus[0]
    eng = Engine(vcpu.decoder, lambda bits: 0, hotpath)
    eng.uc.mem_map(0, 0x10000)
    eng.uc.mem_write(0x1000, LOOP)
    eng.set_regs({"rip": 0x1000, "rbx": 0, "rcx": 0})
    return eng


def _cost(eng: Engine, code: bytes, address: int) -> int:
    return eng.decoder.decode_block(code, address, 64).cost


def test_stop_in_front_of_an_exit_in_the_middle_of_a_block():
    for hotpath in ("native", "python"):
        eng = _engine(hotpath)
        stop = eng.run(10_000_000, 0)
        assert stop.reason is StopReason.INSN and stop.rip == IN_AT
        assert stop.insn.mnemonic == "in"
        rbx, rcx = eng.regs(["rbx", "rcx"])
        assert (rbx, rcx) == (1, 0)  # the IN and what follows did not run
        # charged: exactly the two instructions in front of the IN (and counted: one block)
        assert stop.cycles == _cost(eng, LOOP[:7], 0x1000)
        assert (eng.st.insns, eng.st.blocks) == (2, 1)
        # the model emulates the IN and moves RIP past it; the next run stops at it again
        eng.set_rip(IN_AT + 2)
        stop = eng.run(10_000_000, 0)
        assert stop.reason is StopReason.INSN and stop.rip == IN_AT
        assert eng.regs(["rbx", "rcx"]) == [2, 2]
        # after the IN: two INCs and the JMP, then the two in front of the IN again
        assert stop.cycles == _cost(eng, LOOP[9:], IN_AT + 2) + _cost(eng, LOOP[:7], 0x1000)


def test_a_resumed_run_in_front_of_an_exit_does_not_execute_it():
    eng = _engine("native")
    eng.run(10_000_000, 0)
    stop = eng.run(10_000_000, 0)  # RIP still on the IN: nothing runs
    assert stop.reason is StopReason.INSN and stop.rip == IN_AT and stop.cycles == 0


def test_register_copy_at_a_stop_follows_writes():
    eng = _engine("native")
    eng.run(10_000_000, 0)
    assert eng.reg("rax") == 0x11223344  # from the copy taken at the stop
    eng.set_reg("rax", 0x55)
    assert eng.reg("rax") == 0x55 and eng.regs(["rax", "rip"]) == [0x55, IN_AT]
    eng.set_rip(IN_AT + 2)
    eng.set_reg("rax", -1)  # held modulo 2**64, in the copy as in Unicorn
    assert eng._snap is not None  # (still the copy: RIP and RAX follow their writes)
    assert eng.regs(["rip", "rax"]) == [IN_AT + 2, 2**64 - 1]
    assert eng.uc.reg_read(X.UC_X86_REG_RAX) == 2**64 - 1
    # RFLAGS as written and as the CPU holds it differ (bit 1 is always set): the copy
    # must not keep the written value
    eng.set_reg("rflags", 0)
    assert eng.reg("rflags") == eng.uc.reg_read(X.UC_X86_REG_EFLAGS) == 2
    eng.set_regs({"rsp": 0x8000})
    assert eng.reg("rsp") == 0x8000
    assert eng.uc.reg_read(X.UC_X86_REG_RIP) == IN_AT + 2


def _request(steps: StepLatency, seq: int, base: int, device: str = "uart") -> None:
    r = steps.start("VM", 0, seq, base, "exit")
    for n in range(2, 10):
        steps.clock.now = base + 10 * n
        steps.record_active("VM", 0, n, f"step {n}", device if n == 5 else None)
    steps.finish("VM", 0, r, base + 100 + seq, "back")


def test_step_recorder_summarises_every_request_but_keeps_only_the_first():
    steps = StepLatency(SimpleNamespace(now=0), keep=3)
    for seq in range(1, 11):
        _request(steps, seq, 1000 * seq)
    assert len(steps.requests) == 3 and [s for _vm, s, _r in steps.complete()] == [1, 2, 3]
    summary = steps.breakdown()["VM"]["uart"]
    assert summary["total"]["count"] == 10
    # step 9 -> 10 lasted 100 + seq - 90 cycles for request seq
    assert summary["9"]["min"] == 11 and summary["9"]["max"] == 20
    assert summary["2"]["mean"] == 10
    assert not steps.keeping()


def test_step_recorder_in_a_run_counts_requests_past_the_kept_ones(monkeypatch):
    monkeypatch.setattr(hv.hypervisor, "StepLatency", lambda env: StepLatency(env, keep=5))
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
    r = steps.start("VM", 0, 1, 100, "exit")
    steps.record_active("VM", 0, 3, "HSM interrupt handler")
    clock.now = 300
    steps.record_active("VM", 0, 3, "HSM interrupt handler, for another request")
    assert r["steps"][3] == 200


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
