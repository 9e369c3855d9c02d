"""The HTTP edge: server, middlewares, the route table's entries, rate limits, client addresses, gates, OpenAPI."""
