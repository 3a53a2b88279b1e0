"""The `compare-models` command (`main`) and what it prints for people (`console`: Rich tables,
fields, errors; `progress`: a run's live progress on a terminal), with its dataset commands
(`datasets`) and what its command modules share (`common`).

May import every other stage: the CLI is the top of the package. Only the CLI imports
`compare_models.local` (the local stack's services).
"""
