"""Register-level models of PC devices, shared by the hypervisor's and the device model's
emulations (one piece of code serves both, as the same chip would)."""
