"""The wire contracts: pydantic models of events, actions and configuration records.

Imports nothing from the rest of the project.
"""
