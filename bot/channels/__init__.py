"""Channels: thin edges that turn payloads into engine events and outputs into UI."""
