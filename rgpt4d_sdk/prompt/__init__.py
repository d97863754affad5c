"""Prompt building: Set-of-Marks rendering and answer parsing."""
