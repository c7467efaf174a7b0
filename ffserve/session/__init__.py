"""A client's session: one WebSocket connection's reader, router and writer."""
