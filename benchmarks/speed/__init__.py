"""How fast and how much memory: throughput, the data stage, orchestration, snapshots, re-scoring, CPU schedules, the statistics ' cost and the GPU check."""
