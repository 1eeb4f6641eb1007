"""The native block decoder (sim/_decode.c): its page walk gives what the Python one
(sim/paging.py) gives in every paging mode, faults included; it decodes and costs blocks as
BlockDecoder does, leaves to Python the blocks Python must see, and refuses a capstone whose
instruction layout it was not written for. (tests/test_hotpath.py runs every guest on the
native hook, which decodes in C, and on the Python one, and compares their traces.)"""

import struct

import pytest

from acrn_sim.sim import ConfigError, paging
from acrn_sim.sim.engine import Engine
from acrn_sim.sim.hotpath import native_library
from conftest import boot

pytestmark = pytest.mark.skipif(native_library() is None, reason="native hot path not built")

MiB = 1 << 20
MSR_EFER = 0xC0000080


def _engine(hotpath: str = "native") -> Engine:
    run = boot("hello.elf", hotpath=hotpath)  # a decoder and profile as the simulator has them
    eng = Engine(run.vm.vcpus[0].engine.decoder, lambda bits: 0, hotpath)
    eng.uc.mem_map(0, 16 * MiB)
    return eng


def _python_read(eng: Engine, linear: int, size: int, fetch: bool):
    """sim/paging.py's walk, chunk by chunk as Engine.read_linear does without the decoder."""
    st = eng.paging_state()
    out = b""
    try:
        while size:
            chunk = min(size, 0x1000 - (linear & 0xFFF))
            out += eng.read_phys(paging.translate(linear, st, eng.read_phys, fetch=fetch), chunk)
            linear += chunk
            size -= chunk
    except paging.PageFault as pf:
        return ("fault", pf.linear, pf.error_code)
    return out


def _native_read(eng: Engine, linear: int, size: int, fetch: bool):
    try:
        return eng.read_linear(linear, size, fetch)
    except paging.PageFault as pf:
        return ("fault", pf.linear, pf.error_code)


def _fill(eng: Engine) -> None:
    # every 4 KiB page of the first 16 MiB holds its own number, so a wrong walk reads wrong bytes
    eng.uc.mem_write(0, b"".join(struct.pack("<I", p) * 1024 for p in range(16 * MiB >> 12)))


def _w(eng: Engine, address: int, value: int, size: int) -> None:
    eng.uc.mem_write(address, value.to_bytes(size, "little"))


def _leave_long_mode(eng: Engine) -> None:
    """A new engine starts in long mode, and EFER.LMA cannot be written: CR0.PG on then off
    drops it (as Engine.enter_real_mode does), then EFER.LME goes."""
    eng.set_regs({"cr4": paging.CR4_PAE})
    eng.set_regs({"cr0": paging.CR0_PE | paging.CR0_PG})
    eng.set_regs({"cr0": paging.CR0_PE})
    eng.uc.msr_write(MSR_EFER, 0)
    assert not eng.uc.msr_read(MSR_EFER) & paging.EFER_LMA


def _paging_32(eng: Engine) -> list[int]:
    """32-bit paging: PD at 0x10000; 4 KiB pages 0x1000-0x3FFF at 0x100000 (0x3000 not present);
    a 4 MiB page at 0x400000 to 0x800000; everything else not present."""
    _w(eng, 0x10000, 0x11000 | 3, 4)  # PDE 0 -> PT
    _w(eng, 0x10000 + 4, 0x800000 | 0x83, 4)  # PDE 1: 4 MiB page (PSE)
    for i in (1, 2):
        _w(eng, 0x11000 + 4 * i, (0x100000 + i * 0x1000) | 3, 4)
    _w(eng, 0x11000 + 4 * 4, 0x104000 | 1, 4)  # 0x4000: read-only
    _leave_long_mode(eng)
    eng.set_regs({"cr3": 0x10000, "cr4": paging.CR4_PSE})
    eng.set_regs({"cr0": paging.CR0_PE | paging.CR0_PG | paging.CR0_WP})
    return [0x1000, 0x1FFE, 0x2FF0, 0x3000, 0x3FFE, 0x400000, 0x7FFFFE, 0x800000, 0xFFFFF000]


def _paging_pae(eng: Engine) -> list[int]:
    """PAE: PDPT at 0x20000 (entry 0 present), PD at 0x21000: a 2 MiB page at 0x200000 and a PT
    at 0x22000 for 0x0-0x1FFFFF (page 0x5000 mapped, 0x6000 not)."""
    _w(eng, 0x20000, 0x21000 | 1, 8)
    _w(eng, 0x21000, 0x22000 | 3, 8)
    _w(eng, 0x21000 + 8, 0x600000 | 0x83, 8)
    _w(eng, 0x22000 + 8 * 5, 0x123000 | 3, 8)
    _w(eng, 0x22000 + 8 * 4, 0x124000 | 1, 8)  # 0x4000: read-only
    _leave_long_mode(eng)
    eng.set_regs({"cr3": 0x20000, "cr4": paging.CR4_PAE})
    eng.set_regs({"cr0": paging.CR0_PE | paging.CR0_PG | paging.CR0_WP})
    assert not eng.uc.msr_read(MSR_EFER) & paging.EFER_LMA
    return [0x4FFE, 0x5000, 0x5FFC, 0x6000, 0x200000, 0x3FFFF0, 0x400000, 0x40000000]


def _paging_64(eng: Engine) -> list[int]:
    """4-level: PML4 at 0x30000; PDPT at 0x31000 with a 1 GiB page at 1 GiB (to guest-physical
    3 GiB, which is not RAM: reads as all ones) and a PD at 0x32000 for the first GiB: a 2 MiB page
    at 0x200000, a PT at 0x33000 (page 0x9000 mapped, 0xA000 not)."""
    _w(eng, 0x30000, 0x31000 | 3, 8)
    _w(eng, 0x31000, 0x32000 | 3, 8)
    _w(eng, 0x31000 + 8, 0xC0000000 | 0x83, 8)
    _w(eng, 0x32000, 0x33000 | 3, 8)
    _w(eng, 0x32000 + 8, 0xA00000 | 0x83, 8)
    _w(eng, 0x33000 + 8 * 9, 0x456000 | 3, 8)
    _w(eng, 0x33000 + 8 * 8, 0x457000 | 1, 8)  # 0x8000: read-only
    eng.uc.msr_write(MSR_EFER, 1 << 8)  # LME: CR0.PG turns on long mode (LMA)
    eng.set_regs({"cr3": 0x30000, "cr4": paging.CR4_PAE})
    eng.set_regs({"cr0": paging.CR0_PE | paging.CR0_PG | paging.CR0_WP})
    assert eng.uc.msr_read(MSR_EFER) & paging.EFER_LMA
    return [0x8FF8, 0x9000, 0x9FF8, 0xA000, 0x200000, 0x3FFFFC, 0x40000000, 0x7FFFFFF0,
            0x80000000, 0xFFFF_8000_0000_0000, 0x1_0000_0000]  # fmt: skip


@pytest.mark.parametrize("mode", [None, _paging_32, _paging_pae, _paging_64])
def test_page_walk_matches_the_python_one(mode):
    eng = _engine()
    _fill(eng)
    addresses = [0x0, 0xFFE, 0x123456, 0xFFFF_FFF0] if mode is None else mode(eng)
    assert eng.hook.decoding
    seen = set()
    for linear in addresses:
        for size in (1, 4, 16, 0x1800):  # within a page, and across one or two page ends
            for fetch in (False, True):
                got = _native_read(eng, linear, size, fetch)
                assert got == _python_read(eng, linear, size, fetch), (hex(linear), size, fetch)
                seen.add(type(got))
    if mode is not None:
        assert seen == {bytes, tuple}  # both reads and faults were compared


def _write(eng: Engine, linear: int, data: bytes):
    try:
        return eng.write_linear(linear, data)
    except paging.PageFault as pf:
        return ("fault", pf.linear, pf.error_code)


@pytest.mark.parametrize("mode", [None, _paging_32, _paging_pae, _paging_64])
def test_page_walk_for_writes_matches_the_python_one(mode):
    """Writes through the walk in C (read-only pages under CR0.WP, faults on a later page after
    the earlier one is written, memory that is not RAM) leave what the Python walk leaves."""
    engines = [_engine("native"), _engine("python")]
    results = []
    for eng in engines:
        _fill(eng)
        addresses = [0x0, 0xFFE, 0x123456, 0xFFFF_FFF0] if mode is None else mode(eng)
        assert eng.hook.decoding == (eng.hotpath == "native")
        out = []
        for n, linear in enumerate(addresses):
            for size in (1, 8, 0x1800):
                out.append(_write(eng, linear, bytes([n + size & 0xFF]) * size))
        results.append((out, bytes(eng.uc.mem_read(0, 16 * MiB))))
    assert results[0][0] == results[1][0]
    assert results[0][1] == results[1][1]
    if mode is not None:
        kinds = {type(r) for r in results[0][0]}
        assert kinds == {bool, tuple}  # writes and faults were both compared
        errors = {r[2] for r in results[0][0] if type(r) is tuple}
        assert errors & {paging.PF_W | paging.PF_P}  # a write to a read-only page


def test_blocks_decoded_in_c_cost_what_python_gives():
    """A loop of ordinary instructions runs on blocks decoded in C; the same code on the Python
    hook (every block decoded by BlockDecoder) charges the same cycles."""
    # 0x1000: mov eax, [rbx] ; imul ecx, eax ; add [rbx+8], ecx ; xor edx, edx ; div esi
    #         lea r8, [rax+1] ; dec edi ; jnz 0x1000 ; hlt
    code = bytes.fromhex("8b030fafc8014b0831d2f7f64c8d4001ffcf75ecf4")
    results = []
    for hotpath in ("native", "python"):
        eng = _engine(hotpath)
        eng.uc.mem_write(0x1000, code)
        eng.set_regs({"rip": 0x1000, "rbx": 0x8000, "rsi": 3, "rdi": 50, "rax": 0, "rdx": 0})
        stop = eng.run(10_000_000, 0)
        assert stop.insn is not None and stop.insn.mnemonic == "hlt"
        results.append((stop.cycles, eng.st.insns, eng.st.blocks))
        if hotpath == "native":
            c, py = eng.decode_stats()
            assert c >= 1  # the loop's block was decoded in C
            assert py >= 1  # the block with the HLT was left to Python (it stops)
    assert results[0] == results[1]


def test_blocks_with_a_watched_address_are_left_to_python():
    eng = _engine()
    code = bytes.fromhex("90909090ebfc")  # 0x1000: nop x4 ; jmp 0x1002 (loops)
    eng.uc.mem_write(0x1000, code)
    seen = []
    eng.watch_blocks([0x1003], lambda a, s: seen.append((a, s)))
    eng.set_regs({"rip": 0x1000})
    eng.run(2_000, 0)
    assert seen and all(a <= 0x1003 < a + s for a, s in seen)
    assert eng.decode_stats()[1] >= 1


def test_a_capstone_with_another_layout_is_refused(monkeypatch):
    eng = _engine()
    decoder = eng.decoder
    real = decoder.decode_insns

    def shifted(code, address, bits):
        return [
            type(i)(i.address + 1, i.size, i.mnemonic, i.op_str) for i in real(code, address, bits)
        ]

    monkeypatch.setattr(decoder, "decode_insns", shifted)
    with pytest.raises(ConfigError, match="capstone .* does not match"):
        Engine(decoder, lambda bits: 0, "native")


class _CountingEngine(Engine):
    """Counts the RDTSCs answered in Python (Engine._on_rdtsc)."""

    def _on_rdtsc(self, rdtscp: bool) -> int:
        self.python_reads = getattr(self, "python_reads", 0) + 1
        return super()._on_rdtsc(rdtscp)


def test_rdtsc_reads_the_virtual_tsc_at_its_place_in_the_block():
    """RDTSC and RDTSCP in the middle of a block: the native hook answers them in C (from the
    instruction's tail in its block), with what the Python hook gives; the two reads differ by
    the cycles of the instructions between them, and RDTSCP loads IA32_TSC_AUX."""
    # inc ebx ; rdtsc ; mov esi, eax ; mov edi, edx ; inc ebx ; rdtscp ; hlt
    code = bytes.fromhex("ffc30f3189c689d7ffc30f01f9f4")
    seen = []
    for hotpath in ("native", "python"):
        decoder = boot("hello.elf", hotpath=hotpath).vm.vcpus[0].engine.decoder
        eng = _CountingEngine(decoder, lambda bits: 0, hotpath)
        eng.uc.mem_map(0, 16 * MiB)
        eng.uc.mem_write(0x1000, code)
        eng.tsc_aux = 7
        eng.set_regs({"rip": 0x1000})
        stop = eng.run(10_000_000, 1_000_000)  # (the slice starts at TSC 1,000,000)
        assert stop.insn is not None and stop.insn.mnemonic == "hlt"
        first = eng.reg("rdi") << 32 | eng.reg("rsi")
        second = eng.reg("rdx") << 32 | eng.reg("rax")
        seen.append((first, second, eng.reg("rcx")))
        # the native hook answers both reads in C; the Python hook, in Python
        assert getattr(eng, "python_reads", 0) == (0 if hotpath == "native" else 2)
    assert seen[0] == seen[1]
    first, second, rcx = seen[0]
    cost = eng.decoder.coster.cost
    between = cost("rdtsc", "") + 2 * cost("mov", "esi, eax") + cost("inc", "ebx")
    assert second - first == between and first == 1_000_000 + cost("inc", "ebx") and rcx == 7
