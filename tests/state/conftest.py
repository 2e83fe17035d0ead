"""The state tests run once per backend: each gets a fresh ``database``
(the fixture of tests/conftest.py; PostgreSQL's in the ``postgres`` tier)."""
