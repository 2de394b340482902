"""What workers run: connectors, the registry, RQ job functions, redaction."""
