"""Microsoft Teams: the Bot Framework adapter (app), its outbox port (port), Adaptive Cards (cards) and the
conversation references that let the bot speak first (references)."""
