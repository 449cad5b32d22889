"""The order database: engine settings, schema, migrations and the start-up checks."""
