"""virtio-blk backed by a disk image file on the host (virtio 1.0 §5.2; ACRN
devicemodel/hw/pci/virtio/virtio_block.c and hw/block_if.c).

    -s N,virtio-blk,FILE[,ro][,writeback|writethru]

A request is a chain: a 16-byte device-readable header (type, reserved, sector), the data
(device-writable for a read, device-readable for a write) and a 1-byte device-writable status
(§5.2.6). Types: IN (read), OUT (write), FLUSH, GET_ID (the 20-byte identifier, which ACRN
makes "ACRN--" and part of the MD5 of the option string); others get VIRTIO_BLK_S_UNSUPP.
Errors that the request can carry complete it with VIRTIO_BLK_S_IOERR: a write to a
read-only image (ACRN: EROFS), data buffers in the wrong direction for the request (the
device asked to write into a device-readable buffer), a length that is not whole sectors
or runs past the capacity (EINVAL), a host I/O error. A chain without a proper header or
status byte cannot even say so: it is returned unused (length 0) and reported
(virtio_blk_abort).

Threads: ACRN's blockif has 8 workers (BLOCKIF_NUMTHR); each takes a request, does the host
I/O (preadv/pwritev, then the storage's latency: `virtio_blk_storage`, a wait, not CPU time;
FLUSH waits `virtio_blk_flush` and calls fsync), then completes it and decides on its own
whether to interrupt (virtio_blk_done: vq_relchain, vq_endchains), so completions can
overlap. Writes reach the file when they complete; `writeback` offers
VIRTIO_BLK_F_FLUSH and CONFIG_WCE (ACRN: only then), `ro` opens the file read-only and
offers VIRTIO_BLK_F_RO.

Differences from ACRN: the used length is what the device wrote (data + status for a read;
ACRN reports 1 for every request); the ring is walked by the worker that serves the request
(ACRN walks it in the I/O thread and queues the request to blockif); the model offers
EVENT_IDX and, on the modern transport, VERSION_1 (ACRN's virtio-blk is legacy-only).
Queue size 64 (VIRTIO_BLK_RINGSZ).
"""

from __future__ import annotations

import hashlib
import os
import struct
from dataclasses import dataclass

from acrn_sim.guests.service_vm.kernel import Wait, WaitQueue
from acrn_sim.guests.service_vm.virtio import split_options, take_common
from acrn_sim.guests.service_vm.virtio.pci import VirtioPciDev
from acrn_sim.sim import ConfigError

SECTOR = 512
VIRTIO_BLK_T_IN, VIRTIO_BLK_T_OUT, VIRTIO_BLK_T_FLUSH, VIRTIO_BLK_T_FLUSH_OUT = 0, 1, 4, 5
VIRTIO_BLK_T_GET_ID, VIRTIO_BLK_T_DISCARD, VBH_FLAG_BARRIER = 8, 11, 0x8000_0000
VIRTIO_BLK_S_OK, VIRTIO_BLK_S_IOERR, VIRTIO_BLK_S_UNSUPP = 0, 1, 2
VIRTIO_BLK_ID_BYTES = 20
F_SEG_MAX, F_RO, F_BLK_SIZE, F_FLUSH, F_TOPOLOGY, F_CONFIG_WCE = 2, 5, 6, 9, 10, 11
BLOCKIF_IOV_MAX = 256  # seg_max
BLOCKIF_NUMTHR = 8


@dataclass(frozen=True)
class BlkOptions:
    transport: str
    vbsk: bool
    path: str
    ro: bool
    writeback: bool
    optstr: str  # what ACRN hashes into the identifier


def sleep(kernel, cycles: int):
    """Generator: wait `cycles` without using the CPU (a kernel timer wakes the task)."""
    wq = WaitQueue(kernel, "io wait")
    done: list[bool] = []

    def expire() -> None:
        done.append(True)
        wq.wake_up()

    kernel.add_timer(kernel.now() + cycles, expire)
    while not done:
        yield Wait(wq)


class VirtioBlk(VirtioPciDev):
    CLASS_NAME = "virtio-blk"
    VIRTIO_TYPE = 2
    LEGACY_ID = 0x1001  # VIRTIO_DEV_BLOCK
    PCI_CLASS = 0x010000  # PCIC_STORAGE
    QUEUE_SIZES = (64,)
    CFGSIZE = 48  # struct virtio_blk_config as ACRN lays it out
    WORKERS = BLOCKIF_NUMTHR

    @classmethod
    def parse_options(cls, config: str | None, where: str) -> BlkOptions:
        transport, vbsk, items = take_common(split_options(config), where)
        if not items:
            raise ConfigError(f"{where}: virtio-blk needs a backing file (FILE[,ro])")
        path, ro, writeback = items[0], False, False
        for item in items[1:]:
            if item == "ro":
                ro = True
            elif item in ("writeback", "writethru"):
                writeback = item == "writeback"
            elif item.split("=")[0] in ("discard", "sectorsize", "range", "nocache", "aio"):
                raise ConfigError(f"{where}: virtio-blk option {item!r} is not modelled")
            else:
                raise ConfigError(f"{where}: unknown virtio-blk option {item!r} "
                                  "(ro, writeback, writethru, legacy, modern)")  # fmt: skip
        if vbsk:
            raise ConfigError(f"{where}: ACRN has no kernel back end for virtio-blk (VBS-U only)")
        if not os.path.isfile(path):
            raise ConfigError(f"{where}: disk image {path!r} not found")
        if not os.access(path, os.R_OK if ro else os.R_OK | os.W_OK):
            raise ConfigError(f"{where}: cannot {'read' if ro else 'read and write'} {path!r}")
        return BlkOptions(transport, False, path, ro, writeback, config or "")

    def __init__(self, bus, opt) -> None:
        o: BlkOptions = opt.parsed
        try:
            self.fd = os.open(o.path, os.O_RDONLY if o.ro else os.O_RDWR)
        except OSError as e:
            raise ConfigError(f"-s {opt.spec}: cannot open {o.path}: {e.strerror}") from None
        self.ro = o.ro
        self.writeback = self.original_wce = o.writeback
        self.capacity = os.fstat(self.fd).st_size // SECTOR
        digest = hashlib.md5(o.optstr.encode()).digest()
        d = digest.hex().upper()
        self.ident = f"ACRN--{d[0:4]}-{d[4:8]}-{d[8:12]}".encode()
        super().__init__(bus, opt)

    def features(self) -> int:
        f = 1 << F_SEG_MAX | 1 << F_BLK_SIZE | 1 << F_TOPOLOGY
        if self.writeback:
            f |= 1 << F_FLUSH | 1 << F_CONFIG_WCE
        if self.ro:
            f |= 1 << F_RO
        return f

    def worker_name(self, i: int) -> str:
        return f"blockif worker {i}"

    def _config(self) -> bytes:
        return struct.pack("<QIIHBBIBBHIBBHIII", self.capacity, 0, BLOCKIF_IOV_MAX, 0, 0, 0,
                           SECTOR, 0, 0, 0, 0, int(self.writeback), 0, 0, 0, 0, 0)  # fmt: skip

    def devcfg_read(self, offset: int, size: int) -> int | None:
        return int.from_bytes(self._config()[offset : offset + size], "little")

    def devcfg_write(self, offset: int, size: int, value: int) -> None:
        if offset == 32 and size == 1:  # writeback (§5.2.4, VIRTIO_BLK_F_CONFIG_WCE)
            self.writeback = bool(value & 1)
        else:
            self.note(f"write to read-only configuration at {offset} (ignored)")

    def device_reset(self) -> None:
        self.writeback = self.original_wce  # virtio_blk_reset: blockif_set_wce(original)

    def deinit(self) -> None:
        super().deinit()
        try:
            os.close(self.fd)
        except OSError:
            pass

    # ---------------------------------------------------------- requests
    def process(self, vq, epoch: int):
        """One blockif worker's turn: take one request and carry it out (virtio_blk_proc,
        blockif_proc, virtio_blk_done). True: there may be more."""
        k = self.kernel
        vq.disable_notify(self.mem)
        chain = self.take(vq)
        if chain is None:
            return self.keep_taking(vq)
        if vq.pending(self.mem):
            self.wake_idle_worker()
        yield k.cycles["virtio_vq_getchain"]
        if epoch != self.epoch:
            return False
        segs = chain.segments
        if len(segs) < 2 or segs[0][2] or segs[0][1] != 16 or not segs[-1][2] or segs[-1][1] != 1:
            self.note(f"request {chain.head}: no 16-byte header or 1-byte status: returned unused")
            self.complete(vq, chain, 0)
            self.end(vq, False)
            return True
        rtype, _ioprio, sector = struct.unpack("<IIQ", self.mem.read(segs[0][0], 16))
        rtype &= ~VBH_FLAG_BARRIER
        data = segs[1:-1]
        status_addr = segs[-1][0]
        writeop = rtype in (VIRTIO_BLK_T_OUT, VIRTIO_BLK_T_DISCARD)
        iolen = sum(n for _, n, _ in data)
        status, written = VIRTIO_BLK_S_OK, 0
        if writeop and self.ro:
            status = VIRTIO_BLK_S_IOERR  # EROFS
        elif any(w == writeop for _, _, w in data):
            what = "write into a device-readable" if not writeop else "read a device-writable"
            self.note(f"request {chain.head}: the device was asked to {what} buffer: IOERR")
            status = VIRTIO_BLK_S_IOERR
        elif rtype in (VIRTIO_BLK_T_IN, VIRTIO_BLK_T_OUT):
            if iolen % SECTOR or sector + iolen // SECTOR > self.capacity:
                status = VIRTIO_BLK_S_IOERR  # EINVAL
            else:
                status, written = yield from self._rw(rtype, sector, data, iolen, epoch)
        elif rtype in (VIRTIO_BLK_T_FLUSH, VIRTIO_BLK_T_FLUSH_OUT):
            yield k.cycles["dm_syscall"]
            if not self.ro:
                try:
                    os.fsync(self.fd)
                except OSError:
                    status = VIRTIO_BLK_S_IOERR
            yield from sleep(k, k.cycles["virtio_blk_flush"])
        elif rtype == VIRTIO_BLK_T_GET_ID:
            # the identifier, NUL-padded, not terminated when it fills the buffer
            buf = [(a, n) for a, n, _ in data]
            size = sum(n for _, n in buf)
            ident = self.ident[:size] + bytes(max(0, size - len(self.ident)))
            written = self.write_segments(buf, ident)
        else:
            status = VIRTIO_BLK_S_UNSUPP
        if epoch != self.epoch:
            return False  # the device was reset meanwhile: this request is gone
        self.mem.write(status_addr, bytes([status]))
        self.complete(vq, chain, written + 1)
        self.end(vq, not vq.has_descs(self.mem))
        return True

    def _rw(self, rtype: int, sector: int, data, iolen: int, epoch: int):
        """The host I/O of a read or write, then the storage's latency."""
        k = self.kernel
        yield k.cycles["dm_syscall"] + self.copy_cost(iolen)  # preadv / pwritev
        if epoch != self.epoch:
            return VIRTIO_BLK_S_IOERR, 0
        try:
            if rtype == VIRTIO_BLK_T_IN:
                buf = os.pread(self.fd, iolen, sector * SECTOR)
                buf += bytes(iolen - len(buf))
                self.write_segments([(a, n) for a, n, _ in data], buf)
                written = iolen
            else:
                os.pwrite(self.fd, self.read_segments([(a, n) for a, n, _ in data]),
                          sector * SECTOR)  # fmt: skip
                written = 0
        except OSError as e:
            self.note(f"host I/O error on the disk image: {e.strerror}")
            return VIRTIO_BLK_S_IOERR, 0
        yield from sleep(k, k.cycles["virtio_blk_storage"])
        return VIRTIO_BLK_S_OK, written
