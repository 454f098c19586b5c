"""ar-gen's image tokenizers: encoder/decoder networks, quantizers (VQ, LFQ), losses and the training task.

The import name clashes with HuggingFace's `tokenizers` wheel; `IS_AR_GEN_TOKENIZERS` is the marker that
`ar_gen.check_tokenizers_package` looks for. Submodules are imported explicitly (`from tokenizers import vq`), so
importing this package stays cheap.
"""

IS_AR_GEN_TOKENIZERS = True
