"""Crowds from people counts: expected counts per sensor and hour, and gathering detection."""
