"""Suggestion telemetry and A/B experiments: events, stores, arm assignment, reports.

Imports nothing of ours but itself: the language server records, the CLI reports.
"""
