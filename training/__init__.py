"""Fine-tuning and training: built on `leukgui.core`, never on the GUI or the CLI."""
