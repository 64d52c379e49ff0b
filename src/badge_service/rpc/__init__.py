"""gRPC servicers and the interceptor chain: proto <-> domain, transactions, errors."""
