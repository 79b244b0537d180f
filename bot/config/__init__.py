"""The configuration file into typed values (loader), the environment variables (settings)."""
