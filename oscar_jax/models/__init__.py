"""Neural network modules of OSCAR-Net: CNN backbones, graph encoders and the full model."""
