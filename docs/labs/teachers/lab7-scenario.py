"""Lab 7, reference solution: the kernel prints only warnings (`quiet`), so far fewer
characters go through the device model's UART, one I/O request each."""

from acrn_sim.guests import image_path
from acrn_sim.scenarios import user_vm, with_service_vm


def scenario(opts):
    linux = user_vm(image_path("linux/bzImage"), memory=128 << 20,
                    cmdline="console=ttyS0 quiet",
                    initrd=image_path("linux/initramfs.cpio.gz"))  # fmt: skip
    return with_service_vm([linux])
