"""Real servers started by tests (PostgreSQL, later MariaDB, Redis, moto), each with its pytest fixtures."""
