"""The product's own training on a GPU: `python -m benchmarks.speed.gpu_check` (see its
`__main__` for what it measures and how to run it)."""
