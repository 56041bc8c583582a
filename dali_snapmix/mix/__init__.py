"""Mixing methods: one module per method, one label contract."""
