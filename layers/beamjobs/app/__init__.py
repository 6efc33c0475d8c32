"""The application services: the operations the handlers and the shim call."""
