"""Rules with no I/O: validation, paging, ids and credentials. Never imports grpc or sqlalchemy."""
