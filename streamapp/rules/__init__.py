"""The decision engine, pure: events and state in, actions out.

Imports only ``schemas``, ``streamapp.templating``, ``streamapp.errors`` and the standard library
(and pydantic): no Kafka, no database, no provider SDK. Agents feed it, sinks perform what it decides.
"""
