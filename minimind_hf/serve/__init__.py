"""Serving: an OpenAI-compatible HTTP server, a terminal chat and a web chat page."""
