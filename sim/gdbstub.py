"""A GDB remote stub (GDB's Remote Serial Protocol, "Debugging with GDB", appendix E), in the
form of QEMU's `-gdb tcp::PORT`: GDB connects, sees one thread per vCPU, reads and writes
registers and memory (by guest virtual address), sets breakpoints and watchpoints, steps,
continues and interrupts with Ctrl-C.

This module is the protocol only; what it debugs is a `Target` (hv/debug.py gives one over the
simulator's vCPUs). The stub is synchronous: while GDB holds the guest, the simulation does not
run, so simulated time stands still.
"""

from __future__ import annotations

import socket
from collections.abc import Callable
from typing import Protocol

SIGINT, SIGTRAP = 2, 5

# GDB's target descriptions (gdb/features/i386/{32bit,64bit}-core.xml, 64bit-segments.xml):
# the general registers, then the x87 registers, which GDB's i386 and amd64 architectures
# require in the core feature (without them it rejects the description). They read as zero:
# the simulator does not expose the FPU state (docs/gdb.md).
X87_REGS = [f"st{n}" for n in range(8)] + ["fctrl", "fstat", "ftag", "fiseg", "fioff", "foseg",
                                            "fooff", "fop"]  # fmt: skip
AMD64_REGS = (
    ["rax", "rbx", "rcx", "rdx", "rsi", "rdi", "rbp", "rsp"]
    + [f"r{n}" for n in range(8, 16)]
    + ["rip", "eflags", "cs", "ss", "ds", "es", "fs", "gs"]
    + X87_REGS
    + ["fs_base", "gs_base"]
)
I386_REGS = ["eax", "ecx", "edx", "ebx", "esp", "ebp", "esi", "edi", "eip", "eflags", "cs",
             "ss", "ds", "es", "fs", "gs"] + X87_REGS  # fmt: skip
_SEGMENT_FEATURE = ("fs_base", "gs_base")  # org.gnu.gdb.i386.segments


def _size(name: str, bits: int) -> int:
    """A register's width in bytes in GDB's layout."""
    if name.startswith("st"):
        return 10  # the x87 80-bit extended format
    if name in ("eflags", "cs", "ss", "ds", "es", "fs", "gs") or name in X87_REGS:
        return 4
    return 8 if bits == 64 else 4


def target_xml(bits: int) -> str:
    """The target description GDB asks for (qXfer:features:read:target.xml). GDB numbers the
    registers of its 'g' packet in the order they appear here."""
    arch, regs = ("i386:x86-64", AMD64_REGS) if bits == 64 else ("i386", I386_REGS)

    def reg(r: str) -> str:
        return f'<reg name="{r}" bitsize="{8 * _size(r, bits)}" type="{_type(r)}"/>'

    core = "".join(reg(r) for r in regs if r not in _SEGMENT_FEATURE)
    segments = "".join(reg(r) for r in regs if r in _SEGMENT_FEATURE)
    extra = f'<feature name="org.gnu.gdb.i386.segments">{segments}</feature>' if segments else ""
    return (
        '<?xml version="1.0"?><!DOCTYPE target SYSTEM "gdb-target.dtd">'
        f"<target><architecture>{arch}</architecture>"
        f'<feature name="org.gnu.gdb.i386.core">{core}</feature>{extra}</target>'
    )


def _type(name: str) -> str:
    if name in ("rip", "eip"):
        return "code_ptr"
    if name in ("rsp", "rbp", "esp", "ebp"):
        return "data_ptr"
    if name.startswith("st"):
        return "i387_ext"
    if name in X87_REGS:
        return "int"
    return "int64" if name.startswith("r") or name.endswith("base") else "int32"


class Target(Protocol):
    """What the stub debugs: vCPUs numbered from 1 (GDB's thread ids)."""

    def threads(self) -> list[int]: ...

    def bits(self) -> int: ...

    def read_registers(self, thread: int) -> dict[str, int]: ...

    def write_register(self, thread: int, name: str, value: int) -> None: ...

    def read_memory(self, thread: int, address: int, length: int) -> bytes | None: ...

    def write_memory(self, thread: int, address: int, data: bytes) -> bool: ...

    def set_breakpoint(self, kind: int, address: int, length: int, on: bool) -> bool: ...

    def monitor(self, thread: int, command: str) -> str: ...


class GdbStub:
    """One GDB connection. The simulation calls `stopped(thread, signal)` when a vCPU stops
    (at the start, a breakpoint, a watchpoint, a step, an exit GDB asked to stop at, Ctrl-C);
    it serves GDB until GDB continues or steps, and returns what GDB asked: ("continue" |
    "step", thread) or ("detach", 0)."""

    def __init__(self, target: Target, conn: socket.socket, log: Callable[[str], None]) -> None:
        self.t = target
        self.conn = conn
        self.log = log
        self.buf = b""
        self.g_thread = target.threads()[0]  # Hg: registers and memory
        self.c_thread = -1  # Hc / vCont: the thread to step (-1: all)
        self.no_ack = False
        self.alive = True
        self._waiting = False  # GDB resumed the guest and waits for a stop reply
        self._stop_reply = "S05"

    # ------------------------------------------------------------------ transport
    def _read_packet(self) -> str | None:
        """The next packet's payload (acknowledged), or "\\x03" for an interrupt; None when
        the connection closed."""
        while True:
            while self.buf[:1] in (b"+", b"-"):
                self.buf = self.buf[1:]
            if self.buf[:1] == b"\x03":
                self.buf = self.buf[1:]
                return "\x03"
            start = self.buf.find(b"$")
            end = self.buf.find(b"#", start)
            if start >= 0 and end >= 0 and len(self.buf) >= end + 3:
                payload = self.buf[start + 1 : end]
                self.buf = self.buf[end + 3 :]
                if not self.no_ack:
                    self.conn.sendall(b"+")
                return _unescape(payload).decode("latin-1")
            try:
                chunk = self.conn.recv(65536)
            except OSError:
                chunk = b""
            if not chunk:
                self.alive = False
                return None
            self.buf += chunk

    def _send(self, payload: str) -> None:
        data = payload.encode("latin-1")
        checksum = sum(data) & 0xFF
        self.conn.sendall(b"$" + data + b"#" + f"{checksum:02x}".encode())
        if not self.no_ack:  # wait for GDB's acknowledgement
            while self.alive and not self.buf[:1] == b"+":
                if self.buf[:1] == b"-":
                    self.conn.sendall(b"$" + data + b"#" + f"{checksum:02x}".encode())
                    self.buf = self.buf[1:]
                    continue
                if self.buf and self.buf[:1] not in (b"+", b"-"):
                    break  # a packet came first (GDB pipelines after the ack is implied)
                try:
                    chunk = self.conn.recv(65536)
                except OSError:
                    chunk = b""
                if not chunk:
                    self.alive = False
                    return
                self.buf += chunk
            if self.buf[:1] == b"+":
                self.buf = self.buf[1:]

    def interrupt_pending(self) -> bool:
        """Whether GDB sent Ctrl-C (0x03) meanwhile (a non-blocking look at the socket). The
        0x03 is taken from the input: the stop that follows answers it (RSP "Interrupts":
        the reply to an interrupt is a stop reply)."""
        if b"\x03" not in self.buf and self.alive:
            self.conn.setblocking(False)
            try:
                chunk = self.conn.recv(4096)
                if chunk == b"":
                    self.alive = False
                self.buf += chunk
            except (BlockingIOError, InterruptedError):
                pass
            except OSError:
                self.alive = False
            finally:
                self.conn.setblocking(True)
        if b"\x03" in self.buf:
            self.buf = self.buf.replace(b"\x03", b"", 1)
            return True
        return False

    def output(self, text: str) -> None:
        """Console output for GDB while the target runs: an 'O' packet (RSP "Stop Reply
        Packets": GDB prints it and keeps waiting for the stop reply)."""
        if self.alive and self._waiting:
            self._send("O" + text.encode().hex())

    def exited(self, status: int) -> None:
        """The guest ended: 'W' with its exit status (RSP "Stop Reply Packets"), if GDB waits
        for a stop; then the connection closes."""
        if self.alive and self._waiting:
            try:
                self._send(f"W{status & 0xFF:02x}")
            except OSError:
                pass
        self.alive = False
        try:
            self.conn.close()
        except OSError:
            pass

    # ------------------------------------------------------------------ serving
    def stopped(self, thread: int, signal: int, reason: str = "") -> tuple[str, int]:
        """A vCPU stopped: tell GDB (unless this is the first stop, which GDB asks for with
        '?'), then serve its requests until it resumes the guest."""
        self.g_thread = thread
        self._stop_reply = self._stop_packet(thread, signal, reason)
        if self._waiting:
            self._send(self._stop_reply)
        self._waiting = False
        while self.alive:
            pkt = self._read_packet()
            if pkt is None:
                return ("detach", 0)
            if pkt == "\x03":
                self._send(self._stop_packet(thread, SIGINT, ""))
                continue
            action = self._handle(pkt)
            if action is not None:
                self._waiting = True
                return action
        return ("detach", 0)

    def _stop_packet(self, thread: int, signal: int, reason: str) -> str:
        extra = f"{reason};" if reason else ""
        return f"T{signal:02x}thread:{thread:x};{extra}"

    def _handle(self, pkt: str) -> tuple[str, int] | None:
        t = self.t
        head = pkt[:1]
        if pkt == "?":
            self._send(self._stop_reply)
        elif pkt.startswith("qSupported"):
            self._send("PacketSize=20000;qXfer:features:read+;QStartNoAckMode+;vContSupported+")
        elif pkt == "QStartNoAckMode":
            self._send("OK")
            self.no_ack = True
        elif pkt.startswith("qXfer:features:read:target.xml:"):
            off, length = (int(x, 16) for x in pkt.split(":")[-1].split(","))
            xml = target_xml(t.bits())
            part = xml[off : off + length]
            self._send(("l" if off + length >= len(xml) else "m") + part)
        elif pkt == "qfThreadInfo":
            self._send("m" + ",".join(f"{n:x}" for n in t.threads()))
        elif pkt == "qsThreadInfo":
            self._send("l")
        elif pkt == "qC":
            self._send(f"QC{self.g_thread:x}")
        elif pkt == "qAttached":
            self._send("1")
        elif pkt.startswith("qThreadExtraInfo,"):
            n = int(pkt.split(",")[1], 16)
            self._send(f"vCPU {n - 1}".encode().hex())
        elif pkt.startswith("qRcmd,"):
            command = bytes.fromhex(pkt[6:]).decode(errors="replace")
            text = t.monitor(self.g_thread, command)
            if text:
                self._send("O" + text.encode().hex())
            self._send("OK")
        elif head == "H":
            n = int(pkt[2:], 16) if pkt[2:] not in ("-1", "") else -1
            if pkt[1] == "g" and n > 0:
                self.g_thread = n
            elif pkt[1] == "c":
                self.c_thread = n
            self._send("OK")
        elif head == "T":
            self._send("OK" if int(pkt[1:], 16) in t.threads() else "E01")
        elif pkt == "g":
            self._send(self._registers_hex())
        elif head == "G":
            self._write_all(pkt[1:])
            self._send("OK")
        elif head == "p":
            self._send(self._one_register_hex(int(pkt[1:], 16)))
        elif head == "P":
            num, value = pkt[1:].split("=")
            self._send("OK" if self._write_one(int(num, 16), value) else "E01")
        elif head == "m":
            addr, length = (int(x, 16) for x in pkt[1:].split(","))
            data = t.read_memory(self.g_thread, addr, length)
            self._send(data.hex() if data is not None else "E14")
        elif head == "M":
            where, hexdata = pkt[1:].split(":")
            addr, _ = (int(x, 16) for x in where.split(","))
            ok = t.write_memory(self.g_thread, addr, bytes.fromhex(hexdata))
            self._send("OK" if ok else "E14")
        elif head in ("Z", "z"):
            kind, addr, length = pkt[1:].split(",")[:3]
            ok = t.set_breakpoint(int(kind), int(addr, 16), int(length, 16), head == "Z")
            self._send("OK" if ok else "")
        elif pkt in ("c",) or pkt.startswith("c"):
            return ("continue", 0)
        elif pkt.startswith("s"):
            return ("step", self.g_thread)
        elif pkt == "vCont?":
            self._send("vCont;c;C;s;S")
        elif pkt.startswith("vCont;"):
            actions = pkt[6:].split(";")
            for a in actions:
                kind, _, who = a.partition(":")
                if kind[0] in "sS":
                    return ("step", int(who, 16) if who else self.g_thread)
            return ("continue", 0)
        elif head == "D":
            self._send("OK")
            return ("detach", 0)
        elif head == "k":
            self.alive = False
            return ("kill", 0)
        else:
            self._send("")  # not supported
        return None

    # ------------------------------------------------------------------ registers
    def _names(self) -> list[str]:
        return AMD64_REGS if self.t.bits() == 64 else I386_REGS

    def _registers_hex(self) -> str:
        regs = self.t.read_registers(self.g_thread)
        bits = self.t.bits()
        return "".join(_le(regs.get(n, 0), _size(n, bits)) for n in self._names())

    def _one_register_hex(self, num: int) -> str:
        names = self._names()
        if num >= len(names):
            return "E45"
        regs = self.t.read_registers(self.g_thread)
        return _le(regs.get(names[num], 0), _size(names[num], self.t.bits()))

    def _write_one(self, num: int, hexvalue: str) -> bool:
        names = self._names()
        if num >= len(names):
            return False
        self.t.write_register(
            self.g_thread, names[num], int.from_bytes(bytes.fromhex(hexvalue), "little")
        )
        return True

    def _write_all(self, hexdata: str) -> None:
        raw = bytes.fromhex(hexdata)
        bits = self.t.bits()
        off = 0
        for n in self._names():
            size = _size(n, bits)
            if off + size > len(raw):
                break
            self.t.write_register(self.g_thread, n, int.from_bytes(raw[off : off + size], "little"))
            off += size


def _le(value: int, size: int) -> str:
    return (value & ((1 << (8 * size)) - 1)).to_bytes(size, "little").hex()


def _unescape(data: bytes) -> bytes:
    """The binary escape of the protocol: 0x7d then the byte xor 0x20."""
    if b"}" not in data:
        return data
    out = bytearray()
    it = iter(data)
    for b in it:
        out.append(next(it) ^ 0x20 if b == 0x7D else b)
    return bytes(out)


def listen(port: int, log: Callable[[str], None]) -> socket.socket:
    """Accept GDB's connection on localhost:PORT (blocking, as QEMU's -S waits)."""
    server = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    server.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    server.bind(("127.0.0.1", port))
    server.listen(1)
    log(f"acrn-sim: waiting for GDB on localhost:{port} (target remote localhost:{port})")
    conn, _ = server.accept()
    server.close()
    conn.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    return conn
