"""Example extensions: modules a developer adds to keystile (see README, "Extending keystile")."""
