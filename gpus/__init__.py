"""Hikube Portal: one Django app per domain (see DESIGN.md, Layout)."""
