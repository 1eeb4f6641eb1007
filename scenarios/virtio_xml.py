"""A scenario XML's <virtio_devices> of a post-launched VM, as acrn-dm `-s` options for its
device model (what ACRN's launch script generator, misc/config_tools/launch_config, makes
of them): <block> -> virtio-blk with that image, <network> -> virtio-net on the tap named by
<interface_name> (with vhost when <virtio_framework> is "Kernel based (Virtual Host)"),
<console> -> virtio-console ("Virtio console": the console port; stdio or file back end).

Slots are given in order from 3 (the launch script lets acrn-dm's configuration place them);
what the model cannot run is left out with a note: an image file that does not exist here, a
tap another NIC already uses, a console back end other than stdio or file, and the kinds the
model has no device for (input, gpu, vsock, camera).
"""

from __future__ import annotations

import os

VHOST_FRAMEWORK = "Kernel based (Virtual Host)"


def virtio_slot_options(vm: str, virtio, note, taps: set[str], first_slot: int = 3) -> list[str]:
    """-s options for one VM's typed <virtio_devices> (acrn_xml.VirtioDevices). `note(key,
    text)` reports what is left out; `taps` holds the taps of VMs already done."""
    out: list[str] = []
    slot = first_slot

    def add(spec: str) -> None:
        nonlocal slot
        out.append(f"{slot},{spec}")
        slot += 1

    for path in virtio.block:
        if os.path.isfile(path):
            add(f"virtio-blk,{path}")
        else:
            note(f"virtio-block {path}", f"VM {vm}: <block>{path}: no such image file here, "
                 "the virtio-blk device is left out")  # fmt: skip
    for net in virtio.network:
        tap = net.interface_name or f"tap_{vm}"
        if tap in taps:
            note(f"virtio-net {tap}", f"VM {vm}: <network> tap {tap} is used by another NIC: "
                 "left out")  # fmt: skip
            continue
        taps.add(tap)
        name = tap if tap.startswith(("tap", "vmnet")) else f"tap={tap}"
        add(f"virtio-net,{name}" + (",vhost" if net.virtio_framework == VHOST_FRAMEWORK else ""))
    for i, con in enumerate(virtio.console):
        console = "@" if con.use_type == "Virtio console" else ""
        if con.backend_type == "stdio" and not any("stdio" in o for o in out):
            add(f"virtio-console,{console}stdio:stdio_port{i}")
        elif con.backend_type == "file" and con.output_file_path:
            add(f"virtio-console,{console}file:file_port{i}={con.output_file_path}")
        else:
            why = f"the {con.backend_type} back end is left out (the model has stdio and file)"
            note(f"virtio-console {con.backend_type}", f"VM {vm}: <console>: {why}")
    return out
