"""Protocol-independent ASGI sessions that every protocol feeds.

``websocket.py`` holds the ASGI WebSocket session; the HTTP request cycle still lives in
``pounce.asgi.cycle`` until the pipeline refactor moves it here.
"""
