"""The gRPC edge: servicers, the error table, interceptors and the server factory."""
