"""A run's state without the training loop: tasks by name, the train state, checkpoints, sharding, and loading a
trained work directory (its model, and the frozen components another run reads). Below eval and train."""
