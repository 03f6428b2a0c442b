"""The package list, discovered: everything else is in pyproject.toml.

Why a setup.py: a hand-written ``packages = [...]`` once left three subpackages out of the wheel
while every editable-install test passed. Discovery cannot be written in pyproject.toml here,
because two packages are installed under names their folders do not have (``wrappers/`` ->
``policy_export_wrappers``, ``model_repository_templates/`` -> ``policy_export_triton_templates``;
``[tool.setuptools] package-dir`` maps them) and ``[tool.setuptools.packages.find]`` names a
package after its folder. ``tests/test_packaging.py`` checks the built wheel against the tree.
"""

from setuptools import find_packages, setup

RENAMED = {"policy_export_wrappers": "wrappers", "policy_export_triton_templates": "model_repository_templates"}

packages = find_packages("src")
for name, folder in RENAMED.items():
    packages += [name, *(f"{name}.{sub}" for sub in find_packages(folder))]

setup(packages=packages)
