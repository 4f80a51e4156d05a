"""Process-level building blocks: settings, database, models, accounting, errors and the CLI."""
