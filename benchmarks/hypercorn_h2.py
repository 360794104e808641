"""Hypercorn settings for the HTTP/2 rows of run.py (``--config python:hypercorn_h2``).

Hypercorn closes a connection after ``keep_alive_max_requests`` (1000) requests; h2load
keeps its connections for the whole run and would count every later stream as an error.
Pounce's own cap (``--h2-max-requests``) defaults to 100,000.
"""

keep_alive_max_requests = 10_000_000
