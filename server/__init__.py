"""The HTTP surface: FastAPI app factory, SSE run API, threads, approvals, LangServe."""
