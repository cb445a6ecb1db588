"""Why a model cannot be loaded; each message says what is wrong and how to fix it."""


class ModelLoadError(Exception):
    """The model cannot be loaded as configured."""


class WeightsNotFoundError(ModelLoadError):
    pass


class WeightsCorruptError(ModelLoadError):
    pass


class ActivationUnknownError(ModelLoadError):
    pass


class UnknownModelError(ModelLoadError):
    pass
