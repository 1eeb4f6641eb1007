"""sim/ucapi.py: the Unicorn calls made at every VM exit give the same results through the
native extension and through ctypes."""

from __future__ import annotations

import pytest
from unicorn import UC_ARCH_X86, UC_HOOK_CODE, UC_MODE_64, Uc, UcError
from unicorn import x86_const as X

from acrn_sim.sim import ucapi
from acrn_sim.sim.hotpath import HotPathState

CODE = 0x1000
# mov rax, 0x1122334455667788; inc rax; nop (the hook stops the run in front of the nop)
PROGRAM = bytes.fromhex("48b88877665544332211") + b"\x48\xff\xc0" + b"\x90"
NOP_AT = CODE + 13


def _engine() -> Uc:
    uc = Uc(UC_ARCH_X86, UC_MODE_64)
    uc.mem_map(CODE, 0x1000)
    uc.mem_write(CODE, PROGRAM)
    uc.hook_add(UC_HOOK_CODE, lambda u, *_: u.emu_stop(), None, NOP_AT, NOP_AT)
    return uc


def _exercise() -> tuple:
    uc = _engine()
    regs = ucapi.RegBatch(uc, [X.UC_X86_REG_RIP, X.UC_X86_REG_RAX, X.UC_X86_REG_RBX])
    regs.write([CODE, 0, -1])  # -1: taken modulo 2**64, as the CPU register holds it
    before = regs.read()
    ucapi.emu_start(uc, CODE)
    after = regs.read()
    return before, after, uc.reg_read(X.UC_X86_REG_RBX)


@pytest.mark.skipif(not ucapi.NATIVE, reason="the native extension is not built")
def test_native_and_ctypes_calls_agree(monkeypatch):
    native = _exercise()
    monkeypatch.setattr(ucapi, "NATIVE", False)
    assert _exercise() == native
    before, after, rbx = native
    assert before == [CODE, 0, 2**64 - 1]
    assert after == [NOP_AT, 0x1122334455667789, 2**64 - 1] and rbx == 2**64 - 1


@pytest.mark.parametrize("native", [True, False])
def test_errors_are_unicorn_errors(monkeypatch, native):
    if native and not ucapi.NATIVE:
        pytest.skip("the native extension is not built")
    monkeypatch.setattr(ucapi, "NATIVE", native)
    uc = _engine()
    with pytest.raises(UcError):
        ucapi.emu_start(uc, 0x9000)  # unmapped: a fetch fault
    with pytest.raises((ValueError, IndexError)):
        ucapi.RegBatch(uc, [X.UC_X86_REG_RAX]).write([1, 2])  # one register, two values


def _run_once(native: bool, monkeypatch, begin: int, hook_raises: bool = False) -> tuple:
    monkeypatch.setattr(ucapi, "NATIVE", native)
    uc = _engine()
    if hook_raises:

        def boom(*_):
            raise RuntimeError("from a hook")

        uc.hook_add(UC_HOOK_CODE, boom, None, CODE, CODE)
    state = HotPathState(cycles=7, budget=1, cur_size=4, stop=1, slow=0)
    regs = ucapi.RegBatch(uc, [X.UC_X86_REG_RIP, X.UC_X86_REG_RAX])
    runner = ucapi.Runner(uc, state, regs)
    result = runner.run(begin, 1000, True)
    fields = (state.cycles, state.budget, state.cur_size, state.stop, state.slow)
    again = runner.run(NOP_AT, None, False)  # a further round: the slice's fields stay
    return result, fields, again, (state.cycles, state.budget, state.slow)


@pytest.mark.skipif(not ucapi.NATIVE, reason="the native extension is not built")
def test_runner_native_and_ctypes_agree(monkeypatch):
    """Runner.run: a new slice resets the hook state, runs, and reads the stop registers;
    the native call and the ctypes steps give the same results, errors included."""
    native = _run_once(True, monkeypatch, CODE)
    assert _run_once(False, monkeypatch, CODE) == native
    (err, stop, cycles, regs), fields, _again, kept = native
    assert (err, stop, cycles, regs) == (0, 0, 0, [NOP_AT, 0x1122334455667789])
    assert fields == (0, 1000, 0, 0, 1) and kept == (0, 1000, 1)
    fault = _run_once(True, monkeypatch, 0x9000)  # unmapped: the error comes back, not raised
    assert fault == _run_once(False, monkeypatch, 0x9000)
    assert fault[0][0] != 0 and fault[0][3][0] == 0x9000


@pytest.mark.parametrize("native", [True, False])
def test_runner_raises_a_hooks_exception(monkeypatch, native):
    if native and not ucapi.NATIVE:
        pytest.skip("the native extension is not built")
    with pytest.raises(RuntimeError, match="from a hook"):
        _run_once(native, monkeypatch, CODE, hook_raises=True)
