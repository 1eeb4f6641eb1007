"""Two User VMs exchange numbered frames over virtio-net through the Service VM's bridge
(guests/src/vnet.c: POST_VM1 pings, POST_VM2 answers; every frame is checked on both sides):

    acrn-sim run scenarios/virtio_net.py --report
    acrn-sim run scenarios/virtio_net.py --set backend=vhost --report

Parameters (--set): n=FRAMES (default 1000), backend=vbsu|vhost (default vbsu: the device
model's back end; vhost: ACRN's vhost-net, the kernel back end), transport=legacy|modern
(default: the transitional devices' modern interface).
"""

from acrn_sim.guests import image_path
from acrn_sim.scenarios import param, user_vm, with_service_vm
from acrn_sim.sim import ConfigError

PARAMS = ("n", "backend", "transport")


def scenario(opts):
    n = param(opts, "n", 1000)
    backend = param(opts, "backend", "vbsu", str)
    transport = param(opts, "transport", "", str)
    if backend not in ("vbsu", "vhost") or transport not in ("", "legacy", "modern"):
        raise ConfigError("--set backend=vbsu|vhost, transport=legacy|modern")
    opt = ",vhost" if backend == "vhost" else ""
    guest = f"n={n}" + (f" transport={transport}" if transport else "")
    ping = user_vm(image_path("vnet.elf"), cmdline=f"role=ping {guest}", pcpu=1,
                   name="POST_VM1", devices=[f"4,virtio-net,tap0{opt}"])  # fmt: skip
    pong = user_vm(image_path("vnet.elf"), cmdline=f"role=pong {guest}", pcpu=2,
                   name="POST_VM2", devices=[f"4,virtio-net,tap1{opt}"])  # fmt: skip
    return with_service_vm([ping, pong], busy=opts.service_vm_busy)
