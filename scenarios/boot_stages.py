"""The boot chain of a User VM, timed in simulated time (`acrn-sim run ... --report`).

Stages, with the marker that ends each:
  firmware (vSBL / OVMF)    skipped: acrn-dm's -k loads the kernel itself, and this model has
                            no virtual firmware; shown as skipped, never as zero
  device model set-up       acrn-dm starts -> HC_START_VM's VM runs its first instruction
                            (create the VM, map its memory, write the tables and the kernel)
  kernel decompression      the bzImage's startup_32 -> the first instruction of the
                            decompressed kernel (startup_64 at the address the decompressor
                            extracts to: sim/bzimage.py decompress_target, from the header)
  early kernel              -> start_kernel's first instruction (its address from System.map,
                            found next to the bzImage as System.map or System.map.gz; without
                            one this stage and the next are one)
  start_kernel to /init     -> the console line "Run /init as init process" (init/main.c
                            run_init_process; the console is live and synchronous by then),
                            or, with a `quiet` kernel, the first line of the repo's /init
  /init to power-off        -> the VM powers off (port 0xF4, or S5 through PM1a_CNT)
A Multiboot or ELF User VM has the device model's set-up and then "guest code to power-off".
Markers on instructions are the cycle at which vCPU 0 first runs the basic block holding the
address (hv.exec_markers); console markers are the cycle the line's last byte was written.
"""

from __future__ import annotations

import gzip
from dataclasses import dataclass, field
from pathlib import Path

from acrn_sim.sim import bzimage
from acrn_sim.sim.bootproto import read_image
from acrn_sim.sim.units import fmt_us

INIT_LINE = b"Run /init as init process"
# What the repo's initramfs prints first (guests/linux/init): the marker when `quiet` hides the
# kernel's line
INIT_SCRIPT_LINE = b"acrn-sim-init: reached /init"


def system_map_symbols(kernel: str, names: tuple[str, ...]) -> dict[str, int]:
    """Addresses of `names` in the System.map beside the kernel image, if there is one."""
    base = Path(kernel).parent
    for candidate in ("System.map", "System.map.gz"):
        p = base / candidate
        if p.is_file():
            raw = p.read_bytes()
            text = gzip.decompress(raw) if candidate.endswith(".gz") else raw
            found = {}
            for line in text.decode(errors="replace").splitlines():
                parts = line.split()
                if len(parts) == 3 and parts[2] in names and parts[1] in "tT":
                    found[parts[2]] = int(parts[0], 16)
            return found
    return {}


@dataclass
class BootStages:
    """Set up before the run (markers, console watch), read after it (report)."""

    vm_name: str
    kernel: str
    bzimage: bool
    console_marks: dict[bytes, int] = field(default_factory=dict)
    _tail: bytes = b""

    @classmethod
    def install(cls, hv, config) -> BootStages:
        """Markers for the User VM `config` on the hypervisor, before hv.boot."""
        image = read_image(config.image)  # (a one-line error for what cannot be read)
        data = image[:0x300]
        is_bz = bzimage.is_bzimage(data)
        stages = cls(config.name, config.image, is_bz)
        markers: dict[int, str] = {}
        if is_bz:
            hdr = bzimage.parse_setup_header(image, config.image)
            rd = Path(config.initrd).stat().st_size if config.initrd else 0
            lay = bzimage.layout(config.memory, rd, hdr.setup_size)
            markers[lay.entry] = "startup_32"
            markers[bzimage.decompress_target(hdr, lay.entry)] = "startup_64"
            syms = system_map_symbols(config.image, ("start_kernel",))
            if "start_kernel" in syms:
                markers[syms["start_kernel"]] = "start_kernel"
        hv.exec_markers[config.name] = markers
        return stages

    def console(self, hv, name: str, data: bytes) -> None:
        """Watch the VM's console for the line markers (a line may come in pieces)."""
        if name != self.vm_name or INIT_LINE in self.console_marks:
            return
        self._tail = (self._tail + data)[-200:]
        if INIT_LINE in self._tail or INIT_SCRIPT_LINE in self._tail:
            self.console_marks[INIT_LINE] = hv.now()

    def rows(self, hv, dm) -> list[tuple[str, int | None, int | None, str]]:
        """(stage, start cycle, end cycle, note); start None for a skipped stage."""
        vm = next((v for v in hv.vms if v.name == self.vm_name), None)
        marks = vm.boot_marks if vm else {}
        setup = dict(dm.stage_marks) if dm else {}
        off = vm.shutdown.cycle if vm and vm.shutdown else None
        rows: list[tuple[str, int | None, int | None, str]] = [
            ("firmware (vSBL/OVMF)", None, None, "skipped: acrn-dm -k loads the kernel itself"),
        ]
        first = marks.get("startup_32")
        dm_start = setup.get("dm_start")
        if self.bzimage:
            rows.append(("device model set-up", dm_start, first, "create, map, tables, kernel"))
            chain = [
                ("kernel decompression", "startup_32", marks.get("startup_64")),
                (
                    "early kernel" if "start_kernel" in marks else "kernel to /init",
                    "startup_64",
                    marks.get("start_kernel", self.console_marks.get(INIT_LINE)),
                ),
            ]
            start = first
            for label, _, end in chain:
                rows.append((label, start, end, ""))
                start = end
            if "start_kernel" in marks:
                rows.append(("start_kernel to /init", start, self.console_marks.get(INIT_LINE), ""))
                start = self.console_marks.get(INIT_LINE)
            rows.append(("/init to power-off", start, off, ""))
        else:
            started = setup.get("vm_started")
            rows.append(("device model set-up", dm_start, started, "create, map, tables, image"))
            rows.append(("guest code to power-off", started, off, ""))
        return rows

    def report(self, hv, dm) -> str:
        hz = hv.profile.tsc_hz
        lines = [
            f"Boot stages of {self.vm_name} (simulated time):",
            f"  {'stage':<26} {'start (us)':>12} {'duration (us)':>14}",
        ]
        total_start = total_end = None
        for label, start, end, note in self.rows(hv, dm):
            if start is None and end is None:
                lines.append(f"  {label:<26} {'-':>12} {'skipped':>14}  {note}")
                continue
            if start is None or end is None:
                lines.append(f"  {label:<26} {'-':>12} {'no marker':>14}  (KASLR?)")
                continue
            total_start = start if total_start is None else total_start
            total_end = end
            extra = f"  {note}" if note else ""
            lines.append(
                f"  {label:<26} {fmt_us(start, hz):>12} {fmt_us(end - start, hz):>14}{extra}"
            )
        if total_start is not None and total_end is not None:
            lines.append(f"  {'total':<26} {'':>12} {fmt_us(total_end - total_start, hz):>14}")
        return "\n".join(lines)
