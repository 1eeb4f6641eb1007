"""Two Linux User VMs ping each other over virtio-net through the Service VM's bridge: Linux's
own virtio_net driver (drivers/net/virtio_net.c) against the device model's back end (or
vhost-net), the committed kernel and busybox initramfs (guests/images/linux/; /init's
`acrnsim.test=net`, docs/real-guests.md):

    acrn-sim run scenarios/linux_ping.py --consoles
    acrn-sim run scenarios/linux_ping.py --set backend=vhost --set transport=legacy --report

Each VM pings the other `count` times, then stays up until the peer's echo requests have
stopped, and writes 0 to port 0xF4 if every one of its own was answered (0xE2 otherwise).

Parameters (--set): count=N (echo requests each way, default 3), backend=vbsu|vhost
(default vbsu), transport=legacy|modern (default: transitional, where Linux's virtio_pci
takes the modern interface), mem=MiB (each VM's RAM, default 128).
"""

from pathlib import Path

from acrn_sim.scenarios import param, user_vm, with_service_vm
from acrn_sim.sim import ConfigError

PARAMS = ("count", "backend", "transport", "mem")
LINUX = Path(__file__).resolve().parents[1] / "guests" / "images" / "linux"
ADDRS = ("10.0.0.1", "10.0.0.2")


def vms(count: int = 3, backend: str = "vbsu", transport: str = "", mem_mib: int = 128):
    """The two User VMs (POST_VM1 on pCPU 1, POST_VM2 on pCPU 2)."""
    if backend not in ("vbsu", "vhost") or transport not in ("", "legacy", "modern"):
        raise ConfigError("--set backend=vbsu|vhost, transport=legacy|modern")
    opts = ("," + transport if transport else "") + (",vhost" if backend == "vhost" else "")
    out = []
    for i in (0, 1):
        cmdline = (
            f"console=ttyS0 acrnsim.test=net acrnsim.ip={ADDRS[i]} acrnsim.peer={ADDRS[1 - i]} "
            f"acrnsim.count={count}"
        )
        out.append(
            user_vm(
                str(LINUX / "bzImage"),
                memory=mem_mib << 20,
                cmdline=cmdline,
                initrd=str(LINUX / "initramfs.cpio.gz"),
                pcpu=i + 1,
                name=f"POST_VM{i + 1}",
                devices=[f"4,virtio-net,tap{i}{opts},mac=52:54:00:00:00:0{i + 1}"],
            )
        )
    return out


def scenario(opts):
    two = vms(
        param(opts, "count", 3),
        param(opts, "backend", "vbsu", str),
        param(opts, "transport", "", str),
        param(opts, "mem", 128),
    )
    return with_service_vm(two, busy=opts.service_vm_busy)
