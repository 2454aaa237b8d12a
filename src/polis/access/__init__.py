"""Departments, API keys, grants per dataset x tier x action (deny by default), and the hash-chained
audit log of every access decision."""
