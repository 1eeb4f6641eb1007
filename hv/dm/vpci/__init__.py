"""The hypervisor's virtual PCI (ACRN hypervisor/dm/vpci/): each VM's configuration space as
the hypervisor presents it (vpci.py), passthrough devices (pci_pt.py) with their MSI
capability virtualized (vmsi.py), and the virtual host bridge of a pre-launched VM
(vhostbridge.py). docs/passthrough.md describes the whole path."""
