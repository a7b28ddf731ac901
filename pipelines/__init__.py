"""The core: settings, domain types, ports and adapters, the composition root, the RAG chain.

Imports no other package of ours (not `app`, not `ingest`).
"""
