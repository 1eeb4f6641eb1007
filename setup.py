"""The package's layout, and its one native component: the engine's block hook (sim/_hotpath.c)
and block decoder (sim/_decode.c).

The repository keeps its layers as top-level folders (sim/, hv/, guests/, scenarios/); they
install under one name, acrn_sim (acrn_sim.sim, acrn_sim.hv, ...), so nothing generic lands in
site-packages. The native hook is optional: where no C compiler is available the install still
succeeds and the engine uses its pure-Python block hook, which gives the same results more
slowly (and says so).
"""

from setuptools import Extension, find_packages, setup

LAYERS = ("sim", "hv", "guests", "scenarios")

packages = ["acrn_sim"]
package_dir = {"acrn_sim": "acrn_sim"}
for layer in LAYERS:
    for pkg in [layer, *(f"{layer}.{p}" for p in find_packages(layer))]:
        packages.append(f"acrn_sim.{pkg}")
        package_dir[f"acrn_sim.{pkg}"] = pkg.replace(".", "/")

setup(
    packages=packages,
    package_dir=package_dir,
    ext_modules=[
        Extension(
            "acrn_sim.sim._hotpath",
            sources=["sim/_hotpath.c", "sim/_decode.c"],
            depends=["sim/_hotpath.h"],
            optional=True,
            extra_compile_args=["-O2"],
        ),
    ],
)
