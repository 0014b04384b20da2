"""Kept beside pyproject.toml because Dataflow workers install the code with --setup_file."""

from setuptools import setup

setup()
