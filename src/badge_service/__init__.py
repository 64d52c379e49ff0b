"""badge-service: an asyncio gRPC service for badge programmes across many organisations."""

__version__ = "0.1.0"
