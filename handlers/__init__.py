"""One module per user-facing interaction; platform-neutral (they speak engine events and a ChatPort)."""
