"""streamapp: turns a shop's business events into emails, SMS, credits and alerts."""

__version__ = "0.1.0"
