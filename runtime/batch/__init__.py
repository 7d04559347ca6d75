"""python -m runtime.batch: explain a whole collection on Ray Data, resumable, into Parquet shards.

`import runtime.batch` and its --help work without the `ray` extra (Ray and pyarrow): the driver,
the job and their helpers are imported when the job runs."""

PROG = "onnxcam batch"  # the name its one-line reports start with
