"""The ACRN hypervisor model (ACRN's hypervisor/ tree): VMX, exits, EPT, I/O emulation, VMs,
vCPUs and scheduling. It reaches guest code only through sim's engine, as ACRN reaches it only
through VMX; it never imports guests/."""
