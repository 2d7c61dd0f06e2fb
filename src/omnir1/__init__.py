"""Omni-R1 Ops: the library behind the `omnir1` CLI.

Subpackages are named for what they hold (data, media, ...); heavy dependencies are imported
where they are used so that `omnir1 --help` and DAG parsing stay fast.
"""

__version__ = "0.1.0"
