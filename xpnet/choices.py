"""Every name list of xpnet, defined once and free of NumPy so ``xpnet --help`` stays fast.

The click ``Choice``s of every command and the registries that build the objects (activations,
initializers, optimizers, schedules, data sets, recipes) all read these tuples; the registries
check at import that they implement exactly these names.
"""

ACTIVATIONS = ("relu", "leaky_relu", "sigmoid", "tanh")
INITS = ("he", "xavier", "normal")
OPTIMIZERS = ("sgd", "momentum", "rmsprop", "adam", "adamw")
SCHEDULES = ("constant", "step", "exponential", "cosine", "onecycle")
DATASETS = ("mnist", "fashion-mnist")
RECIPES = ("default", "plain", "handwriting")
DTYPES = ("float32", "float64")
