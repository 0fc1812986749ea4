"""Per-organisation YARN queues and Spark resource profiles."""
