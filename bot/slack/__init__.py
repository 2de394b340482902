"""The Slack adapter: translates between Slack and the engine."""
