"""The public test kit for people who write stores, plugins and notifiers for the rotator.

One contract suite per extension kind, each run over every built-in component in tests/contract/ and meant to be
run over yours:

- `rotator.testing.stores`: `StoreContract` / `run_store_contract` (what the engine relies on from a SecretStore).
- `rotator.testing.notifiers`: `RecordingNotifier`.

Import the names from here (`from rotator.testing import StoreContract`) or from the kind's module.
"""

from rotator.testing.notifiers import RecordingNotifier
from rotator.testing.stores import *  # noqa: F403
from rotator.testing.stores import __all__ as _store_names

__all__ = ["RecordingNotifier", *_store_names]
