"""smdim's kernels inside other libraries' models (import the submodule you need:
`smdim_kernels.integrations.transformers`)."""
