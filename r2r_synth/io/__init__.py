"""Readers and writers. Every reader raises `InputError` naming `path:line` on bad input."""
