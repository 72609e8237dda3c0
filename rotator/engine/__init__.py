"""The rotation engine: a pure state machine (states.py) and the runner that drives plugins through it."""
