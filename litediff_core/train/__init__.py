"""Training of the embedded models: ``train_base`` (the DDPM) and ``train_classifier``
(the Fashion-MNIST feature classifier). Both checkpoint without pickle and resume exactly."""
