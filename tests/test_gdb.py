"""Debugging a guest with GDB (`acrn-sim run IMAGE --gdb PORT [--gdb-wait]`, docs/gdb.md):
Debian's gdb against the simulator in batch mode (breakpoints, steps, watchpoints, threads,
`monitor exit`), a raw Remote Serial Protocol client for Ctrl-C, and the adapter
(hv/debug.py) on its own. A debugged run must write the same statistics and trace, byte for
byte, as the run without GDB."""

from __future__ import annotations

import os
import re
import shutil
import socket
import struct
import subprocess
import sys
import time
from pathlib import Path

import pytest

from acrn_sim.hv.debug import Debugger, exit_reason, io_qualification
from acrn_sim.hv.guest import vmexit
from acrn_sim.sim import paging
from conftest import CLI, ROOT, boot, cli

GDB = shutil.which("gdb") or "/usr/bin/gdb"
needs_gdb = pytest.mark.skipif(
    not os.access(GDB, os.X_OK), reason="GDB is not installed (Debian: apt-get install gdb)"
)
TIMEOUT = 120  # seconds: a hang fails the test instead of blocking the suite


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Sim:
    """`acrn-sim run ... --gdb PORT` as a subprocess, started once it listens."""

    def __init__(self, args: list[str], tmp: Path, name: str, wait: bool = True) -> None:
        self.port = _free_port()
        self.stats, self.trace = tmp / f"{name}.stats.json", tmp / f"{name}.trace.json"
        cmd = [*CLI, "run", *args, "--gdb", str(self.port), "--stats", str(self.stats),
               "--trace", str(self.trace), "--no-progress"]  # fmt: skip
        if wait:
            cmd.append("--gdb-wait")
        self.proc = subprocess.Popen(cmd, cwd=ROOT, stdout=subprocess.PIPE,
                                     stderr=subprocess.PIPE, text=True)  # fmt: skip
        line = self.proc.stderr.readline()  # the one line that says where it listens
        assert f"listening on 127.0.0.1:{self.port}" in line, line
        self.listening = line

    def finish(self) -> tuple[int, str, str]:
        try:
            out, err = self.proc.communicate(timeout=TIMEOUT)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.communicate()
            raise
        return self.proc.returncode, out, err


def _gdb(port: int, image: str, *commands: str) -> str:
    args = [GDB, "-nx", "-batch", "-ex", "set pagination off", "-ex", f"target remote :{port}"]
    for c in commands:
        args += ["-ex", c]
    r = subprocess.run([*args, str(ROOT / "guests/images" / image)], capture_output=True,
                       text=True, timeout=TIMEOUT)  # fmt: skip
    return r.stdout + r.stderr


def _reference(args: list[str], tmp: Path) -> tuple[subprocess.CompletedProcess, Path, Path]:
    stats, trace = tmp / "ref.stats.json", tmp / "ref.trace.json"
    r = cli("run", *args, "--stats", str(stats), "--trace", str(trace), "--no-progress")
    return r, stats, trace


def _same_run(sim: Sim, ref, ref_stats: Path, ref_trace: Path) -> None:
    code, out, err = sim.finish()
    assert code == ref.returncode, err
    assert out == ref.stdout  # the guest's console
    assert sim.stats.read_bytes() == ref_stats.read_bytes()
    assert sim.trace.read_bytes() == ref_trace.read_bytes()


@needs_gdb
def test_breakpoint_step_and_continue_leave_the_run_unchanged(tmp):
    args = ["guests/images/timing.elf"]
    ref, ref_stats, ref_trace = _reference(args, tmp)
    assert ref.returncode == 0 and "out to vUART" in ref.stdout
    sim = Sim(args, tmp, "gdb")
    text = _gdb(sim.port, "timing.elf", "break do_out", "continue", "print $eip == do_out",
                "print/x $eax", "stepi", "info registers eip", "stepi", "print $eip > do_out",
                "delete", "continue")  # fmt: skip
    assert re.search(r"Breakpoint 1, 0x[0-9a-f]+ in do_out \(\)", text), text
    assert "$1 = 1" in text  # stopped on the function's first instruction
    # do_out(i) is first called with i = 0 (measure's loop); stepi moved EIP into its body
    assert re.search(r"eip\s+0x[0-9a-f]+\s+0x[0-9a-f]+ <do_out\+[1-9]\d*>", text), text
    assert "$3 = 1" in text
    assert "[Inferior 1 (Remote target) exited normally]" in text, text
    _same_run(sim, ref, ref_stats, ref_trace)


@needs_gdb
def test_smp_threads_and_a_write_watchpoint(tmp):
    args = ["guests/images/smp.elf", "--cpu-affinity", "1,2"]
    ref, ref_stats, ref_trace = _reference(args, tmp)
    assert "PASS" in ref.stdout
    sim = Sim(args, tmp, "smp")
    text = _gdb(sim.port, "smp.elf", "break ap_main", "continue", "info threads",
                "print (int)ap_up", "watch *(volatile int *)&ap_up", "continue",
                "print (int)ap_up", "delete", "continue")  # fmt: skip
    # the AP (vCPU 1, GDB thread 2) runs ap_main; both vCPUs are threads
    assert re.search(r"Thread 2 hit Breakpoint 1, 0x[0-9a-f]+ in ap_main", text), text
    assert re.search(r"\n\s+1\s+Thread 1 \(vCPU 0\)", text), text
    assert re.search(r"\n\*\s+2\s+Thread 2 \(vCPU 1\) 0x[0-9a-f]+ in ap_main", text), text
    assert "$1 = 0" in text
    # ap_main's `ap_up = 1;`, reported after the store, as on hardware
    assert re.search(r"watchpoint 2: .*\n+Old value = 0\nNew value = 1", text), text
    assert "$2 = 1" in text
    assert "exited normally" in text
    _same_run(sim, ref, ref_stats, ref_trace)


@needs_gdb
def test_monitor_exit_stops_at_the_exit_and_reports_its_qualification(tmp):
    args = ["guests/images/timing.elf"]
    ref, ref_stats, ref_trace = _reference(args, tmp)
    sim = Sim(args, tmp, "exit")
    text = _gdb(sim.port, "timing.elf", "monitor exit IO_INSTRUCTION", "continue", "x/i $pc",
                "monitor exit", "monitor exit cpuid", "continue", "x/i $pc", "stepi",
                "monitor exit nonsense", "continue")  # fmt: skip
    assert "will stop at the next IO_INSTRUCTION exit (30)" in text
    # serial_init's first OUT: port 0x3F9 (the UART's IER), one byte, OUT (SDM Table 27-5)
    first = "VM exit IO_INSTRUCTION (30) on vCPU 0 at rip 0x"
    assert text.count(first) == 2, text  # as the guest stopped, then `monitor exit`
    assert "exit qualification 0x3f90000 (OUT, 1 byte(s), port 0x3f9)" in text
    assert re.search(r"=> 0x[0-9a-f]+ <serial_init\+\d+>:\s+out\s+%al,\(%dx\)", text), text
    assert "VM exit CPUID (10)" in text
    assert re.search(r"=> 0x[0-9a-f]+ <do_cpuid\+\d+>:\s+cpuid", text), text
    assert "unknown exit reason 'nonsense'" in text
    assert "exited normally" in text
    _same_run(sim, ref, ref_stats, ref_trace)


def _rsp(conn: socket.socket, payload: str) -> None:
    data = payload.encode()
    conn.sendall(b"$" + data + b"#" + f"{sum(data) & 0xFF:02x}".encode())


def _reply(conn: socket.socket, buf: bytearray) -> str:
    """The next packet's payload (acknowledged); '+' acks skipped."""
    while True:
        start = buf.find(b"$")
        end = buf.find(b"#", start)
        if start >= 0 and end >= 0 and len(buf) >= end + 3:
            payload = bytes(buf[start + 1 : end]).decode()
            del buf[: end + 3]
            conn.sendall(b"+")
            return payload
        chunk = conn.recv(65536)
        assert chunk, "the stub closed the connection"
        buf += chunk


def test_connect_to_a_running_guest_ctrl_c_and_detach(tmp):
    """Without --gdb-wait the guest runs, stops when GDB connects, and Ctrl-C (0x03) stops it
    while it runs (GDB's protocol spoken directly: batch-mode GDB cannot send Ctrl-C)."""
    args = ["guests/images/workload.elf", "--cmdline", "compute", "--until", "5ms"]
    ref, ref_stats, ref_trace = _reference(args, tmp)
    sim = Sim(args, tmp, "running", wait=False)
    assert "it stops when GDB connects" in sim.listening
    conn = socket.create_connection(("127.0.0.1", sim.port), timeout=TIMEOUT)
    buf = bytearray()
    _rsp(conn, "?")
    assert re.fullmatch(r"T05thread:1;", _reply(conn, buf))
    _rsp(conn, "vCont;c")
    time.sleep(0.3)
    conn.sendall(b"\x03")
    assert re.fullmatch(r"T02thread:1;", _reply(conn, buf))  # SIGINT
    _rsp(conn, "g")
    rip = struct.unpack_from("<I", bytes.fromhex(_reply(conn, buf)), 8 * 4)[0]
    assert 0x100000 <= rip < 0x200000  # in the guest's code (linked at 1 MiB)
    _rsp(conn, "D")
    assert _reply(conn, buf) == "OK"
    conn.close()
    _same_run(sim, ref, ref_stats, ref_trace)  # (the time limit's exit status, as without)


# ---------------------------------------------------------------------- the adapter
def test_adapter_reads_64_bit_guest_memory_through_its_page_tables():
    run = boot("hello64.elf", trace=False, until=20_000)
    dbg = Debugger(run.vm.vcpus)
    assert dbg.bits() == 64 and dbg.threads() == [1]
    engine = run.vm.vcpus[0].engine
    regs = dbg.read_registers(1)
    rip = regs["rip"]
    assert set(regs) >= {"rax", "r15", "rip", "eflags", "cs", "fs_base"}
    code = dbg.read_memory(1, rip, 16)
    assert code == engine.read_phys(engine.translate(rip), 16)
    # Alias the first GiB at 1 GiB (PDPT entry 1 := entry 0): the same bytes by another virtual
    # address, which is not RAM as a physical address
    pml4 = engine.regs(["cr3"])[0] & ~0xFFF
    pdpt = struct.unpack("<Q", engine.read_phys(pml4, 8))[0] & 0x000F_FFFF_FFFF_F000
    entry0 = engine.read_phys(pdpt, 8)
    assert engine.write_phys(pdpt + 8, entry0)
    alias = (1 << 30) + rip
    assert dbg.read_memory(1, alias, 16) == code
    assert engine.read_phys(alias, 16) == b"\xff" * 16
    # A write through the alias lands where the identity mapping reads it
    assert dbg.write_memory(1, alias + 8, b"\x90\x90")
    assert dbg.read_memory(1, rip + 8, 2) == b"\x90\x90"
    # Nothing mapped at 512 GiB (PML4 entry 1): an error for GDB, not bytes
    assert struct.unpack("<Q", engine.read_phys(pml4 + 8, 8))[0] & 1 == 0  # P (SDM Vol. 3 §4.5)
    assert dbg.read_memory(1, 1 << 39, 4) is None
    assert dbg.write_memory(1, 1 << 39, b"x") is False
    dbg.write_register(1, "rbx", 0x1234_5678_9ABC)
    assert dbg.read_registers(1)["rbx"] == 0x1234_5678_9ABC


def test_adapter_32_bit_guest_registers_and_physical_memory():
    run = boot("hello.elf", trace=False, until=20_000)
    dbg = Debugger(run.vm.vcpus)
    assert dbg.bits() == 32
    engine = run.vm.vcpus[0].engine
    regs = dbg.read_registers(1)
    assert regs["eip"] == engine.regs(["rip"])[0] & 0xFFFF_FFFF
    assert not engine.regs(["cr0"])[0] & paging.CR0_PG  # paging off: addresses are physical
    assert dbg.read_memory(1, regs["eip"], 8) == engine.read_phys(regs["eip"], 8)
    dbg.write_register(1, "eax", 0xCAFE)
    assert dbg.read_registers(1)["eax"] == 0xCAFE
    dbg.write_register(1, "cs", 0x1234)  # a selector alone: ignored
    assert dbg.read_registers(1)["cs"] == regs["cs"]


def test_adapter_breakpoints_watchpoints_and_monitor():
    run = boot("hello.elf", trace=False, until=20_000)
    dbg = Debugger(run.vm.vcpus)
    assert dbg.set_breakpoint(0, 0x100000, 1, True) and 0x100000 in dbg.breakpoints
    assert dbg.set_breakpoint(1, 0x100010, 1, True)  # hardware: the same
    assert dbg.set_breakpoint(0, 0x100000, 1, False) and 0x100000 not in dbg.breakpoints
    assert dbg.set_breakpoint(2, 0x200000, 4, True) and len(dbg._watches) == 1
    assert dbg.set_breakpoint(2, 0x200000, 4, False) and not dbg._watches
    assert not dbg.set_breakpoint(7, 0, 1, True)  # no such type: GDB hears "unsupported"
    io = vmexit.dispatch_table[30]
    assert "IO_INSTRUCTION exit (30)" in dbg.monitor(1, "exit io_instruction")
    assert vmexit.dispatch_table[30] is not io  # armed: this one entry is wrapped
    assert "no longer" in dbg.monitor(1, "exit off")
    assert vmexit.dispatch_table[30] is io
    assert "unknown exit reason" in dbg.monitor(1, "exit 999")
    assert "exit REASON" in dbg.monitor(1, "help")
    assert "IO_INSTRUCTION" in dbg.monitor(1, "exits")
    assert exit_reason("30") == 30 and exit_reason("CpuId") == 10
    assert io_qualification(0x3F8_0008) == "IN, 1 byte(s), port 0x3f8"
    assert io_qualification(0x1F0_0031) == "REP OUTS, 2 byte(s), port 0x1f0"


# ---------------------------------------------------------------------- the command line
@pytest.mark.parametrize("port", ["0", "65536", "12ab", "-1", "١٢٣"])
def test_a_bad_port_is_a_one_line_error(port):
    r = cli("run", "guests/images/hello.elf", "--gdb", port)
    assert r.returncode == 2
    assert r.stderr.count("\n") == 1 and "--gdb" in r.stderr and "1 to 65535" in r.stderr


def test_a_port_in_use_and_gdb_wait_alone_are_errors():
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen(1)
        port = busy.getsockname()[1]
        r = cli("run", "guests/images/hello.elf", "--gdb", str(port))
    assert r.returncode == 2 and r.stderr.count("\n") == 1
    assert f"cannot listen on 127.0.0.1:{port}" in r.stderr
    r = cli("run", "guests/images/hello.elf", "--gdb-wait")
    assert r.returncode == 2 and "--gdb-wait goes with --gdb" in r.stderr


def test_without_gdb_nothing_of_the_debugger_is_loaded():
    """The hot path is untouched without --gdb: the debugger's module is not even imported,
    so no hook, wrapper or test of it exists in the run."""
    code = ("import sys; from acrn_sim.scenarios.cli import main; "
            "rc = main(['run', 'guests/images/hello.elf', '--no-progress']); "
            "print('loaded' if 'acrn_sim.hv.debug' in sys.modules else 'absent', rc)")  # fmt: skip
    r = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True,
                       timeout=TIMEOUT)  # fmt: skip
    assert r.stdout.strip().endswith("absent 0"), r.stdout + r.stderr
