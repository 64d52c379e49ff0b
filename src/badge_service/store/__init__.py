"""Persistence: SQLAlchemy tables, the unit of work and the queries. Never sees a protobuf."""
