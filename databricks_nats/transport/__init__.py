"""The transport: settings-driven connection, the durable spool and the background publisher."""

__all__: list[str] = []
