"""Parley: chat-style surveys written as YAML flows, run in Slack and a web chat."""

__version__ = "0.1.0"
