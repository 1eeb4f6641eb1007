"""The Service VM's software, modelled in Python: a minimal kernel that runs tasks on the
Service VM's vCPU time (kernel.py), the HSM driver (hsm.py, Linux drivers/virt/acrn) and the
device model (dm.py and devices.py, ACRN devicemodel/). They talk to the hypervisor only through
hypercalls, the shared IOREQ page and the upcall interrupt, using hv/public.py (the ABI)."""
