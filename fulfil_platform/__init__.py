"""The platform floor below the services: code every service runs on (no domain rules)."""
