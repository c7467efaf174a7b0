"""Repository scripts (not installed): `just cluster`, `just image-test` helpers."""
