"""Process entry points and platform adapters. The only package that knows Slack or Teams exist."""
