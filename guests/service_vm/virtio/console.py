"""virtio-console: a console beside the UART (virtio 1.0 §5.3; ACRN
devicemodel/hw/pci/virtio/virtio_console.c).

    -s N,virtio-console,[@]stdio:PORTNAME          output on the VM's console
    -s N,virtio-console,[@]file:PORTNAME=PATH      output appended to a host file

`@` makes the port the console port (VIRTIO_CONSOLE_CONSOLE_PORT). The model has one port
(max_nr_ports 1). Queues (§5.3.2): port 0 receiveq 0 and transmitq 1, control receiveq 2 and
transmitq 3 (the last two only with VIRTIO_CONSOLE_F_MULTIPORT). Offered:
VIRTIO_CONSOLE_F_MULTIPORT and VIRTIO_CONSOLE_F_EMERG_WRITE (bits 1 and 2; ACRN's mask
means those bits but ORs the bit numbers, so it offers SIZE and MULTIPORT). A write of a
character to emerg_wr (configuration offset 8) goes out on port 0 at once (§5.3.4).

Without MULTIPORT, port 0 is open from DRIVER_OK. With it, the driver's DEVICE_READY gets
DEVICE_ADD and PORT_NAME for port 0, its PORT_READY gets CONSOLE_PORT (an `@` port) and
PORT_OPEN (virtio_console_control_tx, §5.3.6.2). The driver's own PORT_OPEN says whether a
program has the port open (Linux drivers/char/virtio_console.c: port_fops_open/release; a
console port, hvc, is open from the start, init_port_console): input waits for it, because
Linux throws away what arrives at a port nobody has open (in_intr, discard_port_data), and
QEMU's virtio-serial likewise sends only to a connected guest (virtio_serial_guest_ready).

Input: bytes given to the device model for this VM (`console_input`, from a scenario, or the
simulator's standard input with `acrn-sim run ... < file`) fill receive buffers once the port
is ready: at the driver's receive notifications (ACRN waits for the backend to be readable;
here all the input is there from the start, so each refill of the receive queue takes more).
Queue size 64 (VIRTIO_CONSOLE_RINGSZ); transmitted chains are returned with length 0.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass

from acrn_sim.guests.service_vm.virtio import split_options, take_common
from acrn_sim.guests.service_vm.virtio.pci import VirtioPciDev
from acrn_sim.sim import ConfigError

F_SIZE, F_MULTIPORT, F_EMERG_WRITE = 0, 1, 2
PORT0_RX, PORT0_TX, CTRL_RX, CTRL_TX = 0, 1, 2, 3
DEVICE_READY, DEVICE_ADD, DEVICE_REMOVE, PORT_READY = 0, 1, 2, 3
CONSOLE_PORT, CONSOLE_RESIZE, PORT_OPEN, PORT_NAME = 4, 5, 6, 7
BACKENDS = ("stdio", "tty", "pty", "file", "socket")


@dataclass(frozen=True)
class ConsoleOptions:
    transport: str
    vbsk: bool
    backend: str
    port_name: str
    path: str | None
    is_console: bool


class VirtioConsole(VirtioPciDev):
    CLASS_NAME = "virtio-console"
    VIRTIO_TYPE = 3
    LEGACY_ID = 0x1003  # VIRTIO_DEV_CONSOLE
    PCI_CLASS = 0x078000  # simple communications, other
    QUEUE_SIZES = (64, 64, 64, 64)
    CFGSIZE = 12  # struct virtio_console_config: cols, rows, max_nr_ports, emerg_wr

    @classmethod
    def parse_options(cls, config: str | None, where: str) -> ConsoleOptions:
        transport, vbsk, items = take_common(split_options(config), where)
        if vbsk:
            raise ConfigError(f"{where}: ACRN has no kernel back end for virtio-console")
        if len(items) != 1:
            raise ConfigError(f"{where}: the model's virtio-console has exactly one port "
                              "([@]stdio:NAME or [@]file:NAME=PATH)")  # fmt: skip
        spec = items[0]
        is_console = spec.startswith("@")
        backend, _, rest = spec.lstrip("@").partition(":")
        name, _, path = rest.partition("=")
        if backend not in BACKENDS or not name:
            raise ConfigError(f"{where}: expected [@]BACKEND:PORTNAME[=PATH], BACKEND one of "
                              f"{', '.join(BACKENDS)}")  # fmt: skip
        if backend in ("tty", "pty", "socket"):
            raise ConfigError(f"{where}: the {backend} back end is not modelled (stdio, file)")
        if backend == "file" and not path:
            raise ConfigError(f"{where}: the file back end needs a path (file:NAME=PATH)")
        return ConsoleOptions(transport, False, backend, name, path or None, is_console)

    def __init__(self, bus, opt) -> None:
        o: ConsoleOptions = opt.parsed
        self.port_name = o.port_name
        self.is_console = o.is_console
        self.output = bytearray()  # everything port 0 sent (instrument)
        self.input = bytearray(getattr(bus.dm.cfg, "console_input", b"") or b"")
        self.file = None
        if o.backend == "file":
            try:
                self.file = open(o.path, "ab")  # noqa: SIM115 (open for the device's lifetime)
            except OSError as e:
                raise ConfigError(f"-s {opt.spec}: cannot open {o.path}: {e.strerror}") from None
        self.ready = self.port_open = False
        self.guest_open = False  # the driver said a program has port 0 open (PORT_OPEN 1)
        self.ctrl_out: list[bytes] = []  # control messages waiting for a control rx buffer
        super().__init__(bus, opt)

    def features(self) -> int:
        return 1 << F_MULTIPORT | 1 << F_EMERG_WRITE

    def worker_name(self, i: int) -> str:
        return "vtcon"

    @property
    def multiport(self) -> bool:
        return bool(self.negotiated >> F_MULTIPORT & 1)

    def devcfg_read(self, offset: int, size: int) -> int | None:
        return int.from_bytes(struct.pack("<HHII", 0, 0, 1, 0)[offset : offset + size], "little")

    def devcfg_write(self, offset: int, size: int, value: int) -> None:
        if offset == 8 and size == 4 and self.device_caps >> F_EMERG_WRITE & 1:
            self._out(bytes([value & 0xFF]))
        else:
            self.note(f"write to read-only configuration at {offset} (ignored)")

    def driver_ok(self) -> None:
        super().driver_ok()
        if not self.multiport:
            self.port_open = True

    def device_reset(self) -> None:
        self.ready = self.port_open = self.guest_open = False
        self.ctrl_out.clear()

    @property
    def takes_input(self) -> bool:
        """Input can go to port 0: it is open on both sides (without MULTIPORT, from
        DRIVER_OK)."""
        return self.port_open and (self.guest_open or not self.multiport)

    def deinit(self) -> None:
        super().deinit()
        if self.file is not None:
            self.file.close()
            self.file = None

    def _out(self, data: bytes) -> None:
        """virtio_console_backend_write."""
        self.output += data
        if self.file is not None:
            self.file.write(data)
            self.file.flush()
        else:
            self.bus.dm.console(data)

    def process(self, vq, epoch: int):
        k = self.kernel
        q = vq.index
        if q in (PORT0_TX, CTRL_TX):  # virtio_console_notify_tx
            vq.disable_notify(self.mem)
            while True:
                chain = self.take(vq)
                if chain is None:
                    if self.keep_taking(vq):
                        continue
                    break
                data = self.read_segments(chain.readable())
                yield k.cycles["dm_syscall"] + self.copy_cost(len(data))
                if epoch != self.epoch:
                    return False
                if q == PORT0_TX:
                    self._out(data)
                else:
                    self._control(data)
                self.complete(vq, chain, 0)
            self.end(vq, True)
        if q in (PORT0_RX, CTRL_RX, CTRL_TX) or self.ctrl_out:
            yield from self._deliver(epoch)
        return False

    def _control(self, msg: bytes) -> None:
        """virtio_console_control_tx: the driver's control messages (§5.3.6.2)."""
        if len(msg) < 8:
            self.note(f"control message of {len(msg)} bytes (ignored)")
            return
        port, event, value = struct.unpack_from("<IHH", msg)
        if event == DEVICE_READY:
            self.ready = True
            self.ctrl_out.append(struct.pack("<IHH", 0, DEVICE_ADD, 1))
            self.ctrl_out.append(struct.pack("<IHH", 0, PORT_NAME, 1) + self.port_name.encode())
        elif event == PORT_READY:
            if port != 0:
                self.note(f"PORT_READY for port {port}, which does not exist (ignored)")
                return
            if self.is_console:
                self.ctrl_out.append(struct.pack("<IHH", 0, CONSOLE_PORT, 1))
            self.ctrl_out.append(struct.pack("<IHH", 0, PORT_OPEN, 1))
            self.port_open = True
        elif event == PORT_OPEN:
            if port != 0:
                self.note(f"PORT_OPEN for port {port}, which does not exist (ignored)")
                return
            self.guest_open = bool(value)

    def _deliver(self, epoch: int):
        """Control messages into control rx buffers; input into port 0's receive buffers."""
        k = self.kernel
        for q, pending in ((CTRL_RX, self.ctrl_out), (PORT0_RX, None)):
            vq = self.vqs[q]
            if not vq.enabled:
                continue
            sent = False
            while True:
                if pending is not None:
                    if not pending:
                        break
                    data = pending[0]
                elif self.input and self.takes_input:
                    data = bytes(self.input)
                else:
                    break
                chain = self.take(vq)
                if chain is None:
                    break
                yield k.cycles["dm_syscall"] + self.copy_cost(len(data))
                if epoch != self.epoch:
                    return
                n = self.write_segments(chain.writable(), data)
                if pending is not None:
                    pending.pop(0)
                else:
                    del self.input[:n]
                self.complete(vq, chain, n)
                sent = True
            if sent:
                self.end(vq, True)
