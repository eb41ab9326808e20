"""Bridges to other FL frameworks. Each is an optional extra, imported only when used."""
