"""The PySide6 desktop app: thin views over `leukgui.core` and `training`."""
