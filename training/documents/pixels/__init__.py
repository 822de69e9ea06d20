"""The any-order model on 4-colour MNIST pixels."""
