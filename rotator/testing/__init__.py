"""The public test kit for people who write stores, plugins and notifiers for the rotator.

One contract suite per extension kind, each run over every built-in component in tests/contract/ and meant to be
run over yours:

- `rotator.testing.stores`: `StoreContract` / `run_store_contract` (what the engine relies on from a SecretStore).
- `rotator.testing.plugins`: `PluginContract` / `run_plugin_contract` with a `PluginHarness` (a RotationPlugin
  driven through the real engine, against your target, with the invariants checked after every scenario).
- `rotator.testing.notifiers`: `NotifierContract` / `run_notifier_contract` with a `NotifierHarness` (an event is
  delivered with plan, version and kind; no secret in what is delivered or in an error; a failing receiver raises
  NotifyError or TransientError; the same event twice is harmless; failure events delivered with their error and
  action by a notifier that takes them, nothing by one that does not, and never a secret, not even one planted in
  the error text), `sample_event`, `secret_value`, `takes_kind`, and
  `RecordingNotifier` (keeps the events it is given) for tests of the engine and of plugins.

Import the names from here (`from rotator.testing import StoreContract`) or from the kind's module.
"""

from rotator.testing.notifiers import *  # noqa: F403
from rotator.testing.notifiers import __all__ as _notifier_names
from rotator.testing.plugins import *  # noqa: F403
from rotator.testing.plugins import __all__ as _plugin_names
from rotator.testing.stores import *  # noqa: F403
from rotator.testing.stores import __all__ as _store_names

__all__ = [*_notifier_names, *_plugin_names, *_store_names]
