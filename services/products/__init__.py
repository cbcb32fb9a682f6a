"""The products service: product catalogue with search and filters."""
