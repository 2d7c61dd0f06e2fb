"""Data sets: the unified sample record, the layouts' shared readers, the synthetic generator,
the data set check, validation and preprocessing. Each format's loader is its benchmark's
(omnir1.benchmarks)."""

# The names of omnir1.benchmarks.BENCHMARKS (a test holds them equal), kept here free of heavy
# imports so that the CLI can offer the choices without loading numpy.
FORMATS = ("refavs", "revos", "mevis")
