"""The local server inside the app: the model the window has loaded, served over HTTP."""
