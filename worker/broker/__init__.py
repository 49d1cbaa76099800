"""The only aio-pika importer: topology, the session, ack coalescing and the exception mapping."""
