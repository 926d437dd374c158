"""Generated creditline.v1 protobuf and gRPC modules; regenerate, never edit."""
