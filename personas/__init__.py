"""Tenants, their lines and the personas that answer them; loaded from YAML."""

from pathlib import Path

EXAMPLE_TENANTS = Path(__file__).parent / "examples" / "tenants"
