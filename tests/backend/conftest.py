"""Backend test fixtures live in tests/conftest.py (tiny_models is shared with tests/promises)."""
