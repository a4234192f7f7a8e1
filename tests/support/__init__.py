"""Test support: helpers the tests (and the start-up bench) share; not part of the installed package."""
