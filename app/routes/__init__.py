"""The HTTP routes, one module per feature; each parses, calls the core, chooses the response."""
