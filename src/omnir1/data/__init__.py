"""Data sets: the unified sample record, loaders for RefAVS / ReVOS / MeViS, the synthetic
generator, and the data set check."""
