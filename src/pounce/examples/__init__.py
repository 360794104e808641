"""Example applications shipped with Pounce (``pounce pounce.examples.hello:app``)."""
