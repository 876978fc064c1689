"""Packaging beyond pyproject.toml: the top-level `conf/` tree ships inside the package as `pit/conf` (`pit.conf`),
so an installed (non-editable) `python -m pit.run` finds its configs, and `data/` as `pit/data_files` (the HH-RLHF
slice that `+experiment=hh_rlhf_smoke` reads, with its licence)."""

from setuptools import find_namespace_packages, find_packages, setup

CONF = ["pit.conf", *(f"pit.conf.{group}" for group in find_namespace_packages(where="conf"))]

setup(packages=[*find_packages(include=["pit", "pit.*"]), *CONF, "pit.data_files"],
      package_dir={"pit.conf": "conf", "pit.data_files": "data"},
      package_data={**{package: ["*.yaml"] for package in CONF}, "pit.data_files": ["hh-rlhf/*"]})
