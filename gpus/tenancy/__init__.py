"""Tenants, their members and roles, and the demo users."""
