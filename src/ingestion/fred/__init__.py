"""fred."""
