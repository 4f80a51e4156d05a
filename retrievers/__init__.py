"""Retrieval: ingestion, the pgvector store, hybrid search and its evaluation."""
