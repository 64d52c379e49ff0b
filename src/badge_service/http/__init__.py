"""The HTTP transport (Starlette, served by uvicorn on the gRPC server's event loop): hosted
Open Badges 2.0 documents and health for load balancers. Like ``rpc``, it decodes a request,
calls one use case in ``service``, and encodes what it returns; it never reaches the store."""
