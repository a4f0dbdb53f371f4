"""The ways in: command line, HTTP routes, the WebUI entry and the standalone server; thin over lib_merge.app."""
