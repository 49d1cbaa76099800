"""The self-contained demo and the partner simulator used by the quickstart and the tests."""
