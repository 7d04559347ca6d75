"""python -m runtime.batch: explain a whole collection on Ray Data, resumable, into Parquet shards.

Imports Ray only inside job.py: `import runtime.batch` works without the `ray` extra."""
