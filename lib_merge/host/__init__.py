"""Host adapters (AUTOMATIC1111, Forge, a plain folder) behind lib_merge.app.ports.Host."""
