"""The shared kernel: records, networks, file formats and component configs that every
layer above uses. It imports nothing else of the project."""
