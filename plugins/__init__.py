"""Built-in integrations, installed as the import package `rotator_plugins` (setuptools maps it to plugins/).

They import only `rotator`'s public API plus their own client libraries, and register through the same entry
points (pyproject.toml) as a third-party package would.
"""
