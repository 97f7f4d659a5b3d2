"""Models and data: the model registry (built-in, torchvision, own files), the built-in networks,
datasets, and the one input step every experiment starts with. Imports only qcore.quant."""
