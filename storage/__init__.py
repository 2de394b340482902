"""Postgres access: pool, migrations, repositories. Imports nothing above it."""
