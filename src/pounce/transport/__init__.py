"""What sits between the listening socket and a protocol: TLS today."""
