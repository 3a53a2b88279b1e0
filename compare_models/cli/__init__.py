"""The `compare-models` command (`main`: the parser and the exit codes) and its command modules,
one per job (`services`, `runs` with `run_options`, the run's flags derived from RunParams,
`show`, `champions`, `datasets`), what they print for people (`console`: Rich tables, fields,
errors; `progress`: a run's live progress on a terminal) and what they share (`common`).

May import every other stage: the CLI is the top of the package. Only the CLI imports
`compare_models.local` (the local stack's services).
"""
