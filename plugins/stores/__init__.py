"""Secret stores beyond the embedded one (AWS Secrets Manager, Vault KV v2), group rotator.stores."""
