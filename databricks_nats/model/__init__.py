"""The event model: events and their CloudEvents envelope, subjects, and the catalogue of types."""

__all__: list[str] = []
