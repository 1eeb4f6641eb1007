"""A wrong answer to lab 7: more memory does not make the kernel print less."""

from acrn_sim.guests import image_path
from acrn_sim.scenarios import user_vm, with_service_vm


def scenario(opts):
    linux = user_vm(image_path("linux/bzImage"), memory=256 << 20, cmdline="console=ttyS0",
                    initrd=image_path("linux/initramfs.cpio.gz"))  # fmt: skip
    return with_service_vm([linux])
