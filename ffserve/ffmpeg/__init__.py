"""FFmpeg: argument whitelists, the operations' planners (`ops`), processes, progress, probes."""
