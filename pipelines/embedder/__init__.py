"""Dense embeddings: sentence-transformers on torch, or its ONNX export on CPUs."""

# The parts, each using only those before it: tokens (token counts), batching (padded runs),
# sessions (ONNX Runtime, OpenVINO), runner (an export at run time), export (making one),
# cache (the exports on disk), sentence_transformer (the adapter, which picks the backend).
from pipelines.embedder.sentence_transformer import SentenceTransformerEmbedder, build_embedder

__all__ = ["SentenceTransformerEmbedder", "build_embedder"]
