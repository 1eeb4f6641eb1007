"""The engine's stops in front of exiting instructions (one-address code hooks), its register
copy taken at each stop, and the I/O step recorder's bounded memory."""

from unicorn import x86_const as X

from acrn_sim.sim.engine import Engine, StopReason
from conftest import boot

# 0x1000: mov eax, 0x11223344 ; inc ebx ; in al, 0x80 ; inc ecx ; inc ecx ; jmp 0x1000
LOOP = bytes.fromhex("b844332211ffc3e480ffc1ffc1ebf1")
IN_AT = 0x1000 + 7


def _engine(hotpath: str) -> Engine:
    run = boot("hello.elf", hotpath=hotpath)  # a decoder and profile as the simulator has them
    vcpu = run.vm.vcpus[0]
    eng = Engine(vcpu.engine.decoder, lambda bits: 0, hotpath)
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
