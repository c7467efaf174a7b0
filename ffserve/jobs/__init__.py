"""Jobs: admission, the worker pool, the job state machine, a job's lifecycle, its dir."""
