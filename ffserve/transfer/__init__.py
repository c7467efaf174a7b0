"""Moving files: uploads (v1 and chunked), URL download, output PUT, delivery to the client."""
