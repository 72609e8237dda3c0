"""Notifiers (group rotator.notifiers): tell consumers, or redeploy them, once a new credential is live."""
