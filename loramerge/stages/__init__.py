"""One module per DVC stage; dvc.yaml names the same stages."""
