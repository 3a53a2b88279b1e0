"""Real-data benchmarks that print JSON, by kind: `speed` (how fast, how much memory),
`studies` (statistical studies of the product's answers on real data) and `drills` (faults
made on purpose). `common` is their one shared helper. Run one from the project root as a
module: `python -m benchmarks.<kind>.<name> --help`.
"""
