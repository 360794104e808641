"""The request pipeline every protocol feeds and every feature hooks into.

A protocol engine (HTTP/1.1, WebSocket, later HTTP/2 and HTTP/3) turns wire events into calls on
the worker's :class:`~pounce.pipeline.dispatcher.Dispatcher`, once per request or stream, and
implements a :class:`~pounce.pipeline.channel.ResponseChannel` per stream to put the response on
the wire. Everything between the two — scope building, admission, the ASGI cycle, accounting,
response filters and lifecycle events — lives here once.
"""
