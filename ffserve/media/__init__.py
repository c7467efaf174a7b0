"""What a media file holds: the stream model and metadata, read by ffprobe or in-process
(`mp4` boxes, image headers). Pure code over bytes and JSON."""
