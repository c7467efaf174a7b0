"""The service on top: the nursery tree, the operators' HTTP endpoint, the command line."""
