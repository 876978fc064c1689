"""Lightning modules for each trainable stage; the loss math lives in small pure functions beside them."""
