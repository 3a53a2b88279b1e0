"""Runs: the typed record of one run and the schema of its `manifest.json` (`record`), the catalog
of its files in the store (`artifacts`), the gate's decision as the record stores it, with the
decision words (`decision`: here, not in the gate, so the record and the report read decisions
without importing the gate's logic), who may write its prefix (`claim`), what it depended on
(`fingerprint`), runs read back from the bucket (`stored`), a track's history (`track_history`)
and replays (`replay`).

May import: `compare_models.config`, `compare_models.storage`, `compare_models.data`,
`compare_models.training.jobs`, `compare_models.evaluation` and `compare_models.statistics`
(the record holds their typed results). Never the gate, the report or the CLI.
"""
