"""The HTTP API (Litestar): ``create_app`` builds it, ``serve`` runs it with uvicorn. Nothing imports it."""
