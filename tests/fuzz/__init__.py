"""A seeded fuzz harness for the `acrn-sim` command line (see runner.py).

Each case is one run of the real CLI in a subprocess, generated from (seed, index) alone, so
any case can be run again exactly: `python -m tests.fuzz.runner --seed S --only INDEX`.
"""
