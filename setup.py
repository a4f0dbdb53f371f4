"""Build hook beside pyproject.toml, which holds everything else: TOML cannot add a mapped package to the
packages it finds, so the list is made here. The top-level presets/ folder (the repository's one copy)
goes into the wheel as lib_merge/presets/, where lib_merge.paths.shipped_presets_dir finds it."""

from setuptools import find_namespace_packages, setup

setup(packages=[*find_namespace_packages(include=["lib_merge*"]), "lib_merge.presets"])
