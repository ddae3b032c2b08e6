"""SMTP server fixtures (filled in by the transport work)."""
