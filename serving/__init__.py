"""Serving the aligned model: an OpenAI-compatible Ray Serve application (serving/app.py)."""
