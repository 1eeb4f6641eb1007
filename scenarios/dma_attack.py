"""A User VM turns its passthrough device against memory that is not its own, while another VM
runs beside it:

    acrn-sim run scenarios/dma_attack.py

The board has one DMA sensor (00:1f.0), passed through to the User VM ATTACKER by its device
model (-s 7,passthru,00/1f/0). ATTACKER (guests/src/dmaattack.c) programs the device to write
a sample by DMA into
  1. the last page of the pre-launched VM VICTIM's RAM (a host address: what a device without
     an IOMMU would reach),
  2. a page of the hypervisor's own memory (an EPT table),
  3. the first page past ATTACKER's own RAM,
and then points the device's descriptor ring at VICTIM's page (a DMA read). VICTIM
(guests/src/ticker.c) runs its 10 timer ticks meanwhile.

Every attempt is translated by ATTACKER's IOMMU domain, whose second-level table is its EPT:
none of those addresses is mapped there, so each faults, is recorded by the VT-d unit, and
does not happen. The script compares the target pages before and after, and prints:

    VT-d faults: N
    target memory unchanged: yes
"""

from __future__ import annotations

from acrn_sim.guests import image_path
from acrn_sim.hv.hypervisor import HV_SIZE
from acrn_sim.scenarios import pre_launched, user_vm, with_service_vm
from acrn_sim.sim.pci import bdf_str
from acrn_sim.sim.platform import PlatformConfig

PLATFORM = PlatformConfig(devices=["00:1f.0,sensor"])
ATTACKER_MEM, VICTIM_MEM = 32 << 20, 32 << 20
PAGE = 0x1000


def _align_2m(size: int) -> int:
    return (size + (2 << 20) - 1) & ~((2 << 20) - 1)


def _layout(configs) -> dict[str, int]:
    """The host addresses of the targets, by the hypervisor's layout (hv/hypervisor.py): the
    Service VM's RAM from 0, the hypervisor's 4 MiB after it, then the pre-launched VMs."""
    svc = next(c for c in configs if c.load_order == "SERVICE_VM")
    hv_base = _align_2m(svc.memory)
    victim = hv_base + HV_SIZE
    return {
        "VICTIM's last page": victim + VICTIM_MEM - PAGE,
        "the hypervisor's first page (an EPT root)": hv_base,
        "past ATTACKER's RAM": ATTACKER_MEM,
    }


def _configs(targets: dict[str, int] | None = None):
    cmdline = ""
    if targets is not None:
        addrs = list(targets.values())
        cmdline = f"targets={','.join(f'{a:#x}' for a in addrs)} ring={addrs[0]:#x}"
    victim = pre_launched(image_path("ticker.elf"), memory=VICTIM_MEM, pcpu=2, name="VICTIM")
    attacker = user_vm(image_path("dmaattack.elf"), memory=ATTACKER_MEM, pcpu=1, cmdline=cmdline,
                       name="ATTACKER", devices=["7,passthru,00/1f/0"])  # fmt: skip
    return [victim, *with_service_vm([attacker])]


def scenario(opts):
    return _configs(_layout(_configs()))


def main(opts) -> int:
    from acrn_sim.hv.hypervisor import Hypervisor

    targets = _layout(_configs())
    configs = _configs(targets)
    consoles: dict[str, bytes] = {}

    def sink(name: str, data: bytes) -> None:
        consoles[name] = consoles.get(name, b"") + data

    hv = Hypervisor(opts.profile_obj, seed=opts.seed, console_sink=sink, hotpath=opts.hotpath,
                    trace=False, platform=PLATFORM)  # fmt: skip
    hv.boot(configs)
    # the attacker's own RAM holds nothing yet: the targets outside it, byte for byte
    before = {name: hv.mem.read(hpa, PAGE) for name, hpa in targets.items()}
    result = hv.run(opts.profile_obj.tsc_hz)  # at most 1 s of simulated time
    after = {name: hv.mem.read(hpa, PAGE) for name, hpa in targets.items()}

    out = consoles.get("ATTACKER", b"").decode(errors="replace").replace("\r", "")
    for line in out.splitlines():
        if line.startswith("dmaattack:"):
            print(f"[ATTACKER] {line}")
    for f in hv.vtd.faults:
        print(f"  {f.describe()}")
    victim = next(v for v in hv.vms if v.name == "VICTIM")
    victim_ok = victim.shutdown is not None and victim.shutdown.exit_code == 0
    ticks = victim.console.decode(errors="replace").count("tick ")
    unchanged = all(before[n] == after[n] for n in targets)
    for name, hpa in targets.items():
        same = "unchanged" if before[name] == after[name] else "CHANGED"
        print(f"  {name} (HPA {hpa:#x}): {same}")
    sid = bdf_str(0xF8)
    print(f"VICTIM ran on: {ticks} ticks, exit code "
          f"{victim.shutdown.exit_code if victim.shutdown else None}")  # fmt: skip
    print(f"run: {result.status}; the faulting requester: {sid}")
    print(f"VT-d faults: {len(hv.vtd.faults)}")
    print(f"target memory unchanged: {'yes' if unchanged else 'no'}")
    return 0 if hv.vtd.faults and unchanged and victim_ok else 1
