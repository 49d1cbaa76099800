"""Send pipelines: the Stage protocol, the component catalogue, the encoder component, preflight and limits."""
