"""Pictures of what a model sees: attention overlays and image grids (plots), the mistake gallery,
Grad-CAM and gradient saliency (saliency)."""
