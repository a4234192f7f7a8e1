"""attnserve.clients: typed Triton clients (HTTP/gRPC, sync/asyncio), `attnserve infer` and `attnserve loadtest`.

Never imports torch.
"""
