"""Optimize: an automatic search for the best merge over live merges (Optuna studies, scorers, reports)."""
