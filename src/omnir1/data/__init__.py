"""Data sets: the unified sample record, loaders for RefAVS / ReVOS / MeViS, the synthetic
generator, and the data set check."""

# Kept here, free of heavy imports, so that the CLI can offer the choices without loading numpy.
FORMATS = ("refavs", "revos", "mevis")
