"""Tests of the ``agentic`` command-line client (``cli/``)."""
