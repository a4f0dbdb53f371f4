"""Alloy's merge core: streaming checkpoint merges described as recipes.

Layers, top to bottom: surfaces and ui → app → engine → recipe, io → methods, arch (docs/ARCHITECTURE.md).
"""

__version__ = "0.1.0"
