"""The local HTTP API (``edge-runtime serve``, ``[http]`` extra). FastAPI is imported only here."""
