"""ibkr."""
