"""Test double of the WebUI's `modules` package (see README.md)."""
