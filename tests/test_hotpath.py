"""Every guest program gives byte-identical traces:
- on the native block hook and on the pure-Python one (sim/hotpath.py);
- without the C extension at all: the Python hook, and Unicorn called through ctypes;
- with the timeline's event-free waits and with a simpy Timeout for every wait
  (sim/timeline.py).
"""

import atexit
import json
import shutil
import tempfile
from pathlib import Path

import pytest
from fuzz import images, x86

from acrn_sim.guests import image_path
from acrn_sim.scenarios import pre_launched, service_vm, user_vm, with_service_vm
from acrn_sim.sim import timeline, ucapi
from acrn_sim.sim.hotpath import native_library
from acrn_sim.sim.platform import PlatformConfig
from conftest import boot, boot_configs, boot_user

MS = 2_400_000  # cycles


def _smp(hotpath):
    vm = pre_launched(image_path("smp.elf"))
    vm.cpu_affinity = [1, 2]
    return boot_configs([vm, service_vm()], main="PRE_VM0", until=50 * MS, hotpath=hotpath)


def _ipilat(hotpath):
    vm = pre_launched(image_path("ipilat.elf"), cmdline="n=20")
    vm.cpu_affinity = [1, 2]
    return boot_configs([vm, service_vm()], main="PRE_VM0", hotpath=hotpath)


def _ticker(hotpath):
    # a User VM whose LAPIC timer shares pCPU 1 with a busy pre-launched VM (BVT switches)
    busy = pre_launched(image_path("service_vm.elf"), cmdline="busy", pcpu=1, name="BUSY")
    tick = user_vm(image_path("ticker.elf"), pcpu=1, name="POST_VM1")
    return boot_configs(
        [busy, *with_service_vm([tick])], main="POST_VM1", until=12 * MS, hotpath=hotpath
    )


def _pre(image, **kw):
    return lambda hotpath: boot(image, hotpath=hotpath, **kw)


def _user(image, **kw):
    return lambda hotpath: boot_user(image, hotpath=hotpath, **kw)


def _irqwin(hotpath):
    # exercises the interrupt window (the hook's slow mode)
    def inject(hv):
        hv.vms[0].vcpus[0].queue_external_interrupt(0x31)

    return boot("irqwin.elf", hotpath=hotpath, before_run=inject)


def _sensor(image, cmdline):
    """A guest with the board's DMA sensor passed through (DMA, MSIs, BAR accesses)."""
    board = PlatformConfig(devices=["00:1f.0,sensor,latency_us=10,jitter_us=5"])

    def run(hotpath):
        vm = user_vm(image_path(image), cmdline=cmdline, devices=["7,passthru,00/1f/0"])
        return boot_configs(with_service_vm([vm]), main="POST_VM1", hotpath=hotpath,
                            platform=board)  # fmt: skip

    return run


_DISK = Path(tempfile.mkdtemp(prefix="acrn-sim-hotpath-")) / "disk.img"
atexit.register(shutil.rmtree, _DISK.parent, True)  # (no directory left in /tmp per run)


def _virtio(image, cmdline, devices, second=None, virtio_poll=0):
    """A virtio guest as a User VM with its -s devices (a fresh 1 MiB disk image each time),
    and optionally a second one (its image, command line and devices)."""

    def run(hotpath):
        _DISK.write_bytes(bytes(1 << 20))
        vms = [user_vm(image_path(image), cmdline=cmdline, devices=devices,
                       virtio_poll=virtio_poll)]  # fmt: skip
        if second:
            img, cmd, devs = second
            vms.append(user_vm(image_path(img), cmdline=cmd, devices=devs, pcpu=2,
                               name="POST_VM2"))  # fmt: skip
        return boot_configs(with_service_vm(vms), main="POST_VM1", hotpath=hotpath)

    return run


# How each program in guests/images runs here (pre-launched, or a User VM behind the
# Service VM's device model). A new image must be added: test_every_guest_is_covered.
GUESTS = {
    "bench.elf": _user("bench.elf", cmdlines=["pio 200"]),
    "cpuid.elf": _pre("cpuid.elf"),
    "dmaattack.elf": _sensor("dmaattack.elf", "targets=0x3000000 ring=0x3000000"),
    "exceptions.elf": _pre("exceptions.elf"),
    "hello.elf": _pre("hello.elf"),
    "hello64.elf": _pre("hello64.elf"),
    "ioapic.elf": _user("ioapic.elf", busy=True),
    "ipilat.elf": _ipilat,
    "irqwin.elf": _irqwin,
    "ktest_exit.elf": _pre("ktest_exit.elf", cmdline="42", until=3 * MS),
    "ktest_user.elf": _pre("ktest_user.elf", until=3 * MS),
    "ktest_cpu.elf": _pre("ktest_cpu.elf", until=3 * MS),
    "ktest_nmi.elf": _pre("ktest_nmi.elf"),
    "ktest32_user.elf": _pre("ktest32_user.elf", until=3 * MS),
    "lapic.elf": _user("lapic.elf"),
    "longmode.elf": _pre("longmode.elf"),
    "lowload.elf": _pre("lowload.elf", cmdline="a b"),
    "mmiotest.elf": _user("mmiotest.elf", polling=True),
    "msr.elf": _pre("msr.elf"),
    "pcienum.elf": _user("pcienum.elf"),
    "pitrtc.elf": _user("pitrtc.elf"),
    "reset.elf": _user("reset.elf"),
    "sensor.elf": _sensor("sensor.elf", "n=6"),
    "service_vm.elf": _pre("service_vm.elf", cmdline="busy", until=5 * MS),
    "smc.elf": _pre("smc.elf", detect_smc=True),
    "smp.elf": _smp,
    "ticker.elf": _ticker,
    "timing.elf": _pre("timing.elf"),
    "triple.elf": _pre("triple.elf"),
    "uartirq.elf": _user("uartirq.elf"),
    "unclaimed.elf": _pre("unclaimed.elf"),
    "workload.elf": _user("workload.elf", cmdlines=["frame 4 1000 200 2"], until=8 * MS),
    # the virtio programs against the device model's back ends (both transports, VBS-U and
    # VBS-K, MSI-X, INTx and poll mode between them)
    "vbad.elf": _virtio("vbad.elf", "case=usedidx", ["6,virtio-rnd,kernel=on"]),
    "vbench.elf": _virtio("vbench.elf", "dev=blk n=32 batch=4", [f"3,virtio-blk,{_DISK}"]),
    "vblk.elf": _virtio("vblk.elf", "n=32 transport=legacy irq=intx", [f"3,virtio-blk,{_DISK}"]),
    "vcons.elf": _virtio("vcons.elf", "lines=2", ["5,virtio-console,@stdio:stdio_port"]),
    "vnet.elf": _virtio(
        "vnet.elf",
        "role=ping n=10",
        ["4,virtio-net,tap0,vhost"],
        second=("vnet.elf", "role=pong n=10 transport=legacy", ["4,virtio-net,tap1"]),
    ),  # fmt: skip
    "vrng.elf": _virtio("vrng.elf", "bytes=512", ["6,virtio-rnd"], virtio_poll=200_000),
}


def _outputs(run):
    consoles = {vm.name: vm.console for vm in run.hv.vms}
    consoles.update(getattr(run.hv, "consoles", {}))
    return (
        json.dumps(run.hv.tracer.chrome_trace(), sort_keys=True),
        json.dumps(run.hv.stats.to_json(), sort_keys=True),
        consoles,
    )


def test_every_guest_is_covered():
    images = sorted(p.name for p in Path(image_path("hello.elf")).parent.glob("*.elf"))
    assert sorted(GUESTS) == images


@pytest.mark.skipif(native_library() is None, reason="native hot path not built")
@pytest.mark.parametrize("image", sorted(GUESTS))
def test_native_and_python_paths_identical(image):
    native, python = GUESTS[image]("native"), GUESTS[image]("python")
    assert native.vm.vcpus[0].engine.hotpath == "native"
    assert python.vm.vcpus[0].engine.hotpath == "python"
    n, p = _outputs(native), _outputs(python)
    assert len(n[0]) > 1000  # a real trace, not an empty one
    assert n == p


def _pause_guest(hotpath):
    """PAUSE loops, which the PAUSE hook runs without a stop (sim/_hotpath.c hp_pause_hook):
    a udelay-like one (RDTSC, PAUSE, count down) long enough for PAUSE-loop exits, one with
    PAUSEs further apart than PLE_Gap, and one with two PAUSEs in a block; then power-off."""
    div_ecx = b"\xf7\xf1"  # div ecx (ecx = 1, edx = 0: no #DE)
    udelay = x86.RDTSC + x86.PAUSE + x86.DEC_ECX
    code = x86.mov_imm(x86.ECX, 3000) + udelay + x86.jnz_rel8(-len(udelay))
    gaps = x86.PAUSE + div_ecx * 6 + b"\xff\xcb"  # ... dec ebx
    code += x86.mov_imm(x86.EBX, 200) + x86.mov_imm(x86.ECX, 1) + x86.mov_imm(x86.EDX, 0)
    code += gaps
    code += x86.jnz_rel8(-len(gaps))
    two = x86.PAUSE + x86.NOP + x86.PAUSE + x86.DEC_ECX
    code += x86.mov_imm(x86.ECX, 2000) + two + x86.jnz_rel8(-len(two))
    code += x86.mov_imm(x86.EAX, 0) + x86.out_imm(0xF4)
    path = _DISK.parent / "pause.elf"
    path.write_bytes(images.guest("flat32", code, idt=True))
    return boot(str(path), hotpath=hotpath)


@pytest.mark.skipif(native_library() is None, reason="native hot path not built")
def test_pause_guest_native_and_python_identical(monkeypatch):
    native, python = _pause_guest("native"), _pause_guest("python")
    assert native.vm.shutdown.exit_code == 0
    engine = native.vm.vcpus[0].engine
    assert engine.st.pauses > 5000  # the hook ran most PAUSEs
    n, p = _outputs(native), _outputs(python)
    assert '"PAUSE"' in n[1]  # and some exited
    assert n == p
    assert engine.st.insns == python.vm.vcpus[0].engine.st.insns
    monkeypatch.setattr(ucapi, "NATIVE", False)  # nor without the extension at all
    assert _outputs(_pause_guest("python")) == n


@pytest.mark.parametrize("image", sorted(GUESTS))
def test_event_free_waits_change_nothing(image, monkeypatch):
    fast = _outputs(GUESTS[image]("auto"))
    monkeypatch.setattr(timeline, "FAST", False)
    slow = _outputs(GUESTS[image]("auto"))
    assert fast == slow


def test_hotpath_python_is_always_available():
    run = boot("hello.elf", hotpath="python")
    assert run.vm.shutdown.exit_code == 0


@pytest.mark.skipif(native_library() is None, reason="native hot path not built")
@pytest.mark.parametrize("image", sorted(GUESTS))
def test_without_the_extension_at_all_outputs_are_identical(image, monkeypatch):
    """Where no C compiler was available, neither the block hook nor the Unicorn calls at an
    exit (sim/ucapi.py: register batches, the run at a VM entry) are native: ctypes calls
    them. The outputs are the same."""
    native = _outputs(GUESTS[image]("native"))
    monkeypatch.setattr(ucapi, "NATIVE", False)
    without = GUESTS[image]("python")
    assert without.vm.vcpus[0].engine._runner.run.__self__ is without.vm.vcpus[0].engine._runner
    assert _outputs(without) == native
