"""Hosts: the WebUI adapters and the standalone host, behind one protocol (base.Host)."""
