"""The query service: FastAPI app, routes, SSE, errors, auth, metrics, chat page, `rag` CLI."""
