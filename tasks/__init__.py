"""The Prefect tasks of compare-models: thin wrappers that log, retry and call the library."""
