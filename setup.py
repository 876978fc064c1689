"""Packaging beyond pyproject.toml: the top-level `conf/` tree ships inside the package as `pit/conf` (`pit.conf`),
so an installed (non-editable) `python -m pit.run` finds its configs."""

from setuptools import find_namespace_packages, find_packages, setup

CONF = ["pit.conf", *(f"pit.conf.{group}" for group in find_namespace_packages(where="conf"))]

setup(packages=[*find_packages(include=["pit", "pit.*"]), *CONF], package_dir={"pit.conf": "conf"},
      package_data={package: ["*.yaml"] for package in CONF})
