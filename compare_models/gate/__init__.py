"""The gate: each new model (the challenger) judged against the model in use (its champion) on
the same test images, and the champion records (`champions`, their schema in
`champion_record`); the noise band the gate allows
(`noise_band`); the champion re-scored on today's test images (`rescoring`); what changed in a
folder source's data (`data_changes`) and whether a run may skip training (`unchanged_data`);
a new champion handed to serving (`publishing`).

May import: `compare_models.config`, `compare_models.storage`, `compare_models.data`,
`compare_models.models`, `compare_models.training`, `compare_models.statistics`,
`compare_models.runs` and `compare_models.serving`. Never the report (the report shows the gate's decisions from the run's
record) or the CLI.
"""
