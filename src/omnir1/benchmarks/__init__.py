"""The benchmarks: one module each (refavs, revos, mevis) that builds a `base.Benchmark` (layout
and loader, evaluated splits, official protocol, headline figures), registered by name in
`registry` (`get`, `load`, `BENCHMARKS`). The package itself imports nothing: its modules sit
above data and eval's scoring, below the stages that use them.
"""
