"""WebUI install hook: installs only what the WebUI lacks. Never torch, never pins."""

import importlib.util

try:
    import launch  # provided by the WebUI
except ImportError:  # run outside the WebUI
    launch = None

NEEDED = {
    "safetensors": "safetensors",
    "numpy": "numpy",
    "scipy": "scipy",
    "tqdm": "tqdm",
    "numba": "numba",  # smoothAdd's filters compiled
    "optuna": "optuna",  # Optimize
    "cmaes": "cmaes",
    "choix": "choix",  # Optimize with a person (pairwise choices)
    "psycopg2": "psycopg2-binary",  # studies shared by several WebUIs on PostgreSQL
    "transformers": "transformers",  # the WebUI has it already: CLIP for Optimize's scorers
}

for module, package in NEEDED.items():
    if importlib.util.find_spec(module) is None and launch is not None:
        launch.run_pip(f"install {package}", f"{package} for Alloy")
