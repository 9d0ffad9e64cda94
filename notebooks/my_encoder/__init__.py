"""The learner's own encoder, one module per notebook (written by keep())."""
