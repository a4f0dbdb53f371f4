"""The Toolkit: inspect, prune, convert, components and fingerprints of checkpoint files."""
