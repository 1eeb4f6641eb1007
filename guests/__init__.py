"""What runs inside VMs: guest programs (C and assembly under src/ and lib/, prebuilt images
under images/) and, later, the Service VM's software models (HSM, the device model)."""

from pathlib import Path

IMAGES = Path(__file__).parent / "images"


def image_path(name: str) -> str:
    """Path of a committed prebuilt guest image, e.g. image_path("hello.elf")."""
    return str(IMAGES / name)
