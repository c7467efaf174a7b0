"""ISO-BMFF (MP4/MOV/3GP/M4A) read in-process: boxes, codec configuration, streams."""
