"""Loopback streaming helpers for the run tests (real servers on 127.0.0.1 only)."""
