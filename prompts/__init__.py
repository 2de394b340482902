"""Versioned prompt templates, labelled intent examples and output schemas (data, loaded with importlib.resources)."""
