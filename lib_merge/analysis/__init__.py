"""Analysis of models: how alike two are (per key, per block, per attention module)."""
