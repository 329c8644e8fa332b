"""Request bodies and answers of the gateway's HTTP API (pydantic), one module per route area."""
