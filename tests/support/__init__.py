"""Helpers the test suites share: loopback servers, SSE parsing, documents, fakes and seeds."""
