"""Object rewriting and BTF reading for the static linking backend."""
