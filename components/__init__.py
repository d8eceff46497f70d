"""Stage CLIs: parse arguments, validate params, call one library function, log to MLflow."""
