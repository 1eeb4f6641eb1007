"""Build definition of the one native component: sim/_hotpath.c, the engine's block hook.

It is optional: where no C compiler is available the install still succeeds and the engine
uses its pure-Python block hook, which gives the same results more slowly (and says so).
"""

from setuptools import Extension, setup

setup(
    ext_modules=[
        Extension(
            "sim._hotpath", sources=["sim/_hotpath.c"], optional=True, extra_compile_args=["-O2"]
        ),
    ]
)
