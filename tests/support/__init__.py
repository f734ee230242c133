"""Shared helpers for the test suite (loopback HTTP server, ...); not collected as tests."""
