"""Creditline server: credits, holds and the ledger, served over gRPC."""
