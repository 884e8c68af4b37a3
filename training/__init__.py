"""Training: data loading and generation, the lesson's DNN, fitting and SavedModel export."""
