"""acrn-sim: a cycle-level full-system simulator of the ACRN hypervisor on emulated x86.

    import acrn_sim

    sim = acrn_sim.Simulation()
    sim.add_service_vm()
    sim.add_user_vm(acrn_sim.image("timing.elf"), pcpus=[2], memory="16M")
    result = sim.run()
    print(result.io_latency("POST_VM1", "uart").round_trip.p99)  # cycles

The API is in scenarios/api.py (docs/outputs.md). The repository's folders are the package's
layers, installed under this name: acrn_sim.sim (the platform: engine, timeline, devices),
acrn_sim.hv (the hypervisor), acrn_sim.guests (the guests and the Service VM's software) and
acrn_sim.scenarios (scenarios, the command line and this API).
"""

from acrn_sim.guests import image_path as image
from acrn_sim.scenarios.api import (
    STATS_SCHEMA_VERSION,
    DeviceIo,
    IoStep,
    Latency,
    Result,
    Scenario,
    Simulation,
    VmResult,
    csv_tables,
    explain_first_io,
)
from acrn_sim.sim import ConfigError

__all__ = [
    "STATS_SCHEMA_VERSION",
    "ConfigError",
    "DeviceIo",
    "IoStep",
    "Latency",
    "Result",
    "Scenario",
    "Simulation",
    "VmResult",
    "csv_tables",
    "explain_first_io",
    "image",
]
