"""The wire: WebSocket frames and handshake, protocol messages, options, binary framing,
and a connection's outbound queue. Pure protocol vocabulary; imports nothing above it."""
