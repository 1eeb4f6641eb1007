"""The scenario-script form: a Service VM plus one pre-launched VM running the hello guest.

    acrn-sim run scenarios/hello.py --report

As in ACRN's hybrid scenario, the pre-launched VM comes first (VM0) and owns its pCPU and RAM;
the Service VM (VM1) gets the rest of the machine.
"""

from acrn_sim.guests import image_path
from acrn_sim.scenarios import pre_launched, service_vm


def scenario(opts):
    return [
        pre_launched(image_path("hello.elf"), memory=opts.mem, cmdline=opts.cmdline or "hello"),
        service_vm(busy=opts.service_vm_busy),
    ]
