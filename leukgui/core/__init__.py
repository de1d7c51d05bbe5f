"""Qt-free core: imaging, backbones, model bundles, the analysis engine, Grad-CAM, metrics,
reports and synthetic cells. Everything above (CLI, GUI, training) drives this package."""
