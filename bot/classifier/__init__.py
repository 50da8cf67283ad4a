"""The learned spam classifier: features, the trained model, training, labelled files."""
